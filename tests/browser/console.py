"""The web console in a real browser (Debian's chromium through chromedriver, Selenium).

Run by services/gateway/tests/it/browser.rs against a live stack:

    console.py BASE_URL OPERATOR_KEY VIEWER_KEY ADMIN_KEY PIPELINE_NAME LONG_PIPELINE_NAME [SCREENSHOT_DIR]

Signs in, creates a pipeline from YAML (after a broken version shown with its line), opens a pipeline, runs it and watches the run page reach its end live (the page's
script follows the run's events), sees the overview update in place, pauses a schedule, filters the audit log, cancels a long
run, and checks that a viewer sees no operator actions. With SCREENSHOT_DIR, saves each page at 1280x800 there.
"""

import os
import sys
from urllib.parse import urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

base, operator_key, viewer_key, admin_key, pipeline, long_pipeline = sys.argv[1:7]
shots = sys.argv[7] if len(sys.argv) > 7 else None


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("FLEXCORE_CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"]:
        options.add_argument(arg)
    service = Service(os.environ.get("FLEXCORE_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def shot(driver, name):
    if shots:
        os.makedirs(shots, exist_ok=True)
        driver.save_screenshot(os.path.join(shots, f"{name}.png"))


def sign_in(driver, key):
    driver.get(f"{base}/console/login")
    field = driver.find_element(By.ID, "token")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.CSS_SELECTOR, "header .who")))


def buttons(driver):
    return [b.text for b in driver.find_elements(By.CSS_SELECTOR, "main button")]


def open_pipeline(driver, name):
    driver.get(f"{base}/console/pipelines?q={name}")
    driver.find_element(By.LINK_TEXT, name).click()
    WebDriverWait(driver, 10).until(EC.title_contains(name))


def wait_state(driver, state, seconds):
    WebDriverWait(driver, seconds).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, f"main .run .state-{state}"))
    )


driver = browser()
try:
    # An operator: sign in, the overview, a pipeline, run it, watch it end live.
    sign_in(driver, operator_key)
    assert driver.title.startswith("Overview"), driver.title
    assert driver.find_element(By.ID, "services").text == "Services"
    shot(driver, "overview")
    driver.get(f"{base}/console/pipelines")
    shot(driver, "pipelines")
    open_pipeline(driver, pipeline)
    assert "Run now" in buttons(driver), buttons(driver)
    shot(driver, "pipeline")
    driver.find_element(By.XPATH, "//main//button[text()='Run now']").click()
    WebDriverWait(driver, 10).until(EC.url_contains("/console/runs/"))
    run_url = driver.current_url
    run_id = urlparse(run_url).path.rsplit("/", 1)[1]
    # The page's script follows the run and shows its end without a reload by hand.
    wait_state(driver, "succeeded", 60)
    records = int(driver.find_element(By.CSS_SELECTOR, "[data-field=records_total]").text)
    assert records > 0, records
    assert "Cancel" not in buttons(driver)
    shot(driver, "run")
    driver.get(f"{base}/console/runs")
    assert run_id in driver.page_source
    shot(driver, "runs")

    # The overview updates in place (its script refetches it), not by reloading the page.
    driver.get(f"{base}/")
    driver.execute_script("window.flexcoreMarker = 1")
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-overview]").get_attribute("data-updated")
    )
    assert driver.execute_script("return window.flexcoreMarker") == 1, "the overview reloaded"
    assert driver.find_element(By.ID, "fires").text == "Next schedule fires"

    # A schedule paused from the schedules page.
    driver.get(f"{base}/console/schedules")
    driver.find_element(By.XPATH, "//main//button[text()='Pause']").click()
    WebDriverWait(driver, 10).until(
        EC.presence_of_element_located((By.XPATH, "//main//button[text()='Resume']"))
    )
    assert driver.find_elements(By.CSS_SELECTOR, "main .state-paused")
    shot(driver, "schedules")

    # The audit log filtered to runs: every event shown is a run's.
    driver.get(f"{base}/console/events")
    shot(driver, "events")
    Select(driver.find_element(By.ID, "aggregate_type")).select_by_visible_text("run")
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.url_contains("aggregate_type=run"))
    aggregates = [row.find_elements(By.TAG_NAME, "td")[3].text for row in driver.find_elements(By.CSS_SELECTOR, "main tbody tr")]
    assert aggregates and all(a.startswith("run ") for a in aggregates), aggregates

    driver.get(f"{base}/console/plugins")
    shot(driver, "plugins")

    # A long run, cancelled from its page.
    open_pipeline(driver, long_pipeline)
    driver.find_element(By.XPATH, "//main//button[text()='Run now']").click()
    WebDriverWait(driver, 10).until(EC.url_contains("/console/runs/"))
    WebDriverWait(driver, 30).until(
        EC.presence_of_element_located((By.XPATH, "//main//button[text()='Cancel']"))
    )
    driver.find_element(By.XPATH, "//main//button[text()='Cancel']").click()
    wait_state(driver, "cancelled", 60)

    # An admin creates a pipeline from YAML: a misspelt plugin is shown at its line, the
    # text kept; fixed, the pipeline is created.
    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(driver, 10).until(EC.url_contains("/console/login"))
    sign_in(driver, admin_key)
    driver.get(f"{base}/console/pipelines/new")
    good = (
        "name: from-the-browser\n"
        "owner: web\n"
        "steps:\n"
        f"  - plugin: {pipeline}-gen@1.0.0\n"
        "    config: {records: 3}\n"
        f"  - plugin: {pipeline}-discard@1.0.0\n"
    )
    editor = driver.find_element(By.ID, "yaml")
    editor.clear()
    editor.send_keys(good.replace("-gen@", "-gne@"))
    driver.find_element(By.CSS_SELECTOR, "form.editor button[type=submit]").click()
    error = WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "error"))).text
    assert error.startswith("pipeline.yaml:4:") and "not registered" in error, error
    marked = driver.find_element(By.CSS_SELECTOR, ".source li.at-fault").text
    assert "-gne@1.0.0" in marked, marked
    shot(driver, "editor-error")
    editor = driver.find_element(By.ID, "yaml")
    assert "-gne@" in editor.get_attribute("value")
    editor.clear()
    editor.send_keys(good)
    driver.find_element(By.CSS_SELECTOR, "form.editor button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.title_contains("from-the-browser"))

    # Sign out; a viewer sees no operator action.
    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(driver, 10).until(EC.url_contains("/console/login"))
    sign_in(driver, viewer_key)
    open_pipeline(driver, pipeline)
    assert buttons(driver) == [], buttons(driver)
    driver.get(f"{base}/console/runs/{run_id}")
    assert run_id in driver.title and "Cancel" not in buttons(driver)
    print("console browser test: ok")
finally:
    driver.quit()
