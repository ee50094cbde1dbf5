"""The web demo in a real headless browser: README's screenshot, and the browser half of tests/webdemo.

    python scripts/web_demo_screenshot.py [--rode logs/demo/version_0/adapter]
        [--lora logs/demo_lora_r32/version_0/adapter] [--out results/web_demo.png]

Starts ``python -m rode_lightning demo`` with the demo's RoDE adapter and, beside it, its LoRA r32 (the two runs
README's commands train), opens the page in Debian's ``chromium`` through ``chromedriver`` (``apt-get install
chromium chromium-driver``; nothing is downloaded), uploads the first of the demo's test photos, asks for its
ingredients, waits for both answers and the heatmaps, and saves the page. Selenium is pointed at the installed
browser and driver, so Selenium Manager never fetches one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def chromium():
    """A headless Chromium under Selenium: the installed browser and driver, a fresh user data folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        raise RuntimeError("the web demo's browser test needs Debian's chromium and its driver: "
                           "apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={tempfile.mkdtemp(prefix='rode_chromium_')}", "--window-size=1500,1250"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def ask_in_browser(driver, url: str, photo: Path, task: str, columns: int, timeout: float = 120) -> list[dict]:
    """Open the page, upload ``photo``, choose ``task``, ask; per model column its answer, the parsed text and
    whether the layers heatmap is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    upload = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#photo input[type=file]"))
    upload.send_keys(str(photo))
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#photo img"))  # the upload has arrived
    choice = wait.until(lambda page: page.find_element(By.XPATH, f"//*[@id='task']//label[.//span[text()='{task}']]"))
    choice.click()
    driver.find_element(By.CSS_SELECTOR, "#ask").click()
    results = []
    for column in range(columns):
        box = wait.until(lambda page: _with_value(page.find_element(By.CSS_SELECTOR, f"#answer-{column} textarea")))
        wait.until(lambda page: page.find_element(By.CSS_SELECTOR, f"#parsed-{column}").text.strip())
        results.append({"answer": box.get_attribute("value"),
                        "parsed": driver.find_element(By.CSS_SELECTOR, f"#parsed-{column}").text})
    for column in range(columns):  # heatmaps arrive with the answers; a model without routers has none
        try:
            WebDriverWait(driver, 10).until(
                lambda page: page.find_elements(By.CSS_SELECTOR, f"#layers-{column} img")
                and page.find_elements(By.CSS_SELECTOR, f"#tokens-{column} img"))
            results[column]["heatmaps"] = True
        except Exception:  # selenium's TimeoutException: no heatmap in this column
            results[column]["heatmaps"] = False
    return results


def _with_value(element):
    return element if element.get_attribute("value") else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rode", default="logs/demo/version_0/adapter")
    parser.add_argument("--lora", default="logs/demo_lora_r32/version_0/adapter")
    parser.add_argument("--out", default="results/web_demo.png")
    arguments = parser.parse_args()
    port = _free_port()
    command = [sys.executable, "-m", "rode_lightning", "demo", "--port", str(port), "--config", "configs/demo.yaml",
               "--model.adapter_path", arguments.rode, "--compare", arguments.lora]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, env={**os.environ,
                                                                             "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("the demo page did not start")
            time.sleep(1)
        from rode_lightning.data.datamodule import default_demo_dir

        photo = sorted((default_demo_dir() / "unifood" / "images").glob("test_*.png"))[0]
        driver = chromium()
        try:
            results = ask_in_browser(driver, f"http://127.0.0.1:{port}", photo, "ingredients", columns=2)
            time.sleep(1)
            out = REPO / arguments.out
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
        for result in results:
            print(result)
        print(f"screenshot: {arguments.out}")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
