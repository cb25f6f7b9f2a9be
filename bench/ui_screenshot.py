"""Drive the labeling UI in headless Chromium: screenshot the annotator page, then answer N
pairs with the keyboard, as a person would (docs/ui.md: the screenshot and the README flow).

    python bench/ui_screenshot.py --url http://127.0.0.1:8000 --project demo --token T \
        --out docs/img/ui.png --phone docs/img/ui-phone.png --answers 10
    python bench/ui_screenshot.py --project demo --token OWNER --dashboard docs/img/ui-dashboard.png

Needs a running ``pbrl ui serve`` and Debian's ``chromium`` (``--chromium PATH``).
Answers alternate left / right / equal on the arrow keys; prints each query id and the key.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--project", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--out", type=Path, help="Desktop screenshot (1280x800) to write.")
    ap.add_argument("--phone", type=Path, help="Phone screenshot (390x844) to write.")
    ap.add_argument("--answers", type=int, default=0, help="Pairs to answer by keyboard.")
    ap.add_argument("--dashboard", type=Path, help="Dashboard screenshot (--token: an owner's).")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    link = f"{args.url}/?project={args.project}&token={args.token}"
    ready = (
        "!document.getElementById('work').hidden && "
        "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)"
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            for path, viewport in ((args.phone, (390, 844)), (args.out, (1280, 800))):
                if path is None:
                    continue
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.goto(link)
                page.wait_for_function(ready, timeout=120000)
                page.wait_for_timeout(700)  # let both clips run into motion
                path.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(path))
                print(f"wrote {path}")
                page.close()
            if args.dashboard is not None:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(f"{args.url}/dashboard?project={args.project}&token={args.token}")
                page.wait_for_function(
                    "document.querySelectorAll('#people tbody tr').length > 0", timeout=60000
                )
                args.dashboard.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.dashboard), full_page=True)
                print(f"wrote {args.dashboard}")
                page.close()
            if args.answers:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(link)
                keys = ("ArrowLeft", "ArrowRight", "ArrowUp")
                t0 = time.time()
                for i in range(args.answers):
                    page.wait_for_function(ready, timeout=120000)
                    q = page.evaluate("document.body.dataset.query")
                    page.keyboard.press(keys[i % 3])
                    print(f"query {q}: {keys[i % 3]}")
                    page.wait_for_function(
                        "q => document.body.dataset.query !== q || "
                        "!document.getElementById('message').hidden",
                        arg=q,
                        timeout=120000,
                    )
                print(f"answered {args.answers} pairs in {time.time() - t0:.1f} s")
                print(page.text_content("#stats"))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
