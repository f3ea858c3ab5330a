"""The screenshot of `mho serve`'s web page in docs/serving.md: serve MODEL, upload a shipped
clip in headless chromium (`make browser`), save the page as a PNG.

    .venv/bin/python recipes/serve_screenshot.py baseline.onnx docs/serving-page.png
"""

import shutil
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from mho.data.datasets import resolve_dataset
from mho.serve.config import ServeConfig
from mho.serve.server import ServerThread

CLIP_TEXT = "set a fast pace"


def main(model: str, out: str) -> None:
    clip = next(u for u in resolve_dataset("festival-slt")[1] if u.text == CLIP_TEXT)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=820,640"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or ""
    with ServerThread(ServeConfig(port=0), [model]) as server:
        driver = webdriver.Chrome(options=options,
                                  service=Service(shutil.which("chromedriver")))
        try:
            driver.get(server.url + "/")
            while not driver.execute_script(
                    "return document.querySelectorAll('#model option').length"):
                time.sleep(0.1)
            driver.find_element(By.ID, "file").send_keys(str(clip.audio))
            driver.find_element(By.ID, "send").click()
            while not driver.execute_script(
                    "return document.getElementById('transcript').dataset.done === '1'"):
                time.sleep(0.1)
            driver.save_screenshot(out)
        finally:
            driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3])
