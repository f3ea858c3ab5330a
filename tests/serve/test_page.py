"""The web page at `/` in a real headless browser (Debian's chromium and chromedriver,
`make browser`): pick the model, upload a shipped clip, read the transcript and timings;
a corrupt file shows the server's message."""

import shutil
import time

import pytest
from click.testing import CliRunner

from mho.cli import main
from tests.serve.conftest import NAME

pytestmark = pytest.mark.slow
CHROMEDRIVER = shutil.which("chromedriver")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=900,760"):
        options.add_argument(flag)
    if shutil.which("chromium"):
        options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.1)


@pytest.mark.skipif(CHROMEDRIVER is None, reason="no chromedriver: `make browser`")
def test_page_transcribes_an_upload(server, model_file, utterances, tmp_path):
    from selenium.webdriver.common.by import By

    utterance = utterances[3]
    expected = CliRunner().invoke(main, ["transcribe", str(model_file), str(utterance.audio),
                                         "--decoder", "greedy"]).output.strip().split("\t")[1]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really audio")
    driver = browser()
    try:
        driver.get(server.url + "/")
        wait_for(driver, "return document.querySelectorAll('#model option').length > 0")
        assert driver.find_element(By.ID, "model").get_attribute("value") == NAME
        driver.find_element(By.ID, "file").send_keys(str(utterance.audio))
        driver.find_element(By.ID, "send").click()
        wait_for(driver, "return document.getElementById('transcript').dataset.done === '1'")
        assert driver.find_element(By.ID, "transcript").text == expected
        timings = driver.find_element(By.ID, "timings").text
        assert "real-time factor" in timings and f"{utterance.duration:.2f} s" in timings
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        driver.find_element(By.ID, "file").send_keys(str(corrupt))
        driver.find_element(By.ID, "send").click()
        wait_for(driver, "return document.getElementById('error').dataset.done === '1'")
        assert "cannot decode 'corrupt.wav' as audio" in driver.find_element(By.ID,
                                                                              "error").text
    finally:
        driver.quit()
