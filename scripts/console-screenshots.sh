#!/usr/bin/env bash
# Regenerates the console's screenshots in docs/console/ (1280x800): the console's
# browser test (services/gateway/tests/it/browser.rs, tests/browser/console.py) with
# screenshots on. Needs what scripts/test.sh needs (chromium, chromedriver, Selenium).
set -euo pipefail
cd "$(dirname "$0")/.."
FLEXCORE_CONSOLE_SCREENSHOTS="$PWD/docs/console" \
  cargo test -p flexcore-gateway --test it -- browser::the_console_works_in_a_real_browser --exact
ls -la docs/console
