"""Take docs/tensorboard.png: a screenshot of a running TensorBoard in headless Chromium.

    tensorboard --logdir out/tb_demo --port 6006 &
    python docs/tensorboard_screenshot.py docs/tensorboard.png

Chromium (Debian's ``chromium`` package) is driven over its DevTools protocol with aiohttp (a
dependency of the ``lightning`` extra): open the page, wait for TensorBoard to load its data,
close the settings pane, take the screenshot. ``forceSVG=true`` makes TensorBoard draw its charts
as SVG, which headless Chromium renders without a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import aiohttp

TAGS = "alignment/(feedback_alignment/|grad_alignment/fc[12]|test_accuracy)"
PORT = 9333
CLOSE_SETTINGS = "document.querySelector('button[aria-label=\"Close side pane\"]')?.click()"


async def screenshot(url: str, wait: float, width: int, height: int) -> bytes:
    """The page at ``url`` after ``wait`` seconds, as PNG bytes."""
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json") as response:
                targets = json.load(response)
            break
        except OSError:
            time.sleep(0.2)
    page = next(t for t in targets if t["type"] == "page")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws,
    ):
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await ws.send_json({"id": counter, "method": method, "params": params})
            while True:
                message = await ws.receive_json()
                if message.get("id") == counter:
                    return message

        await call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await call("Page.navigate", url=url)  # the browser starts on a blank page
        await asyncio.sleep(wait)
        await call("Runtime.evaluate", expression=CLOSE_SETTINGS)
        await asyncio.sleep(3)
        shot = await call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["result"]["data"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:6006")
    parser.add_argument("--tags", default=TAGS, help="TensorBoard's tag filter (a regex)")
    parser.add_argument("--wait", type=float, default=25.0, help="seconds for the page to load")
    parser.add_argument("--size", default="1600x1000")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    url = f"{args.url}/?forceSVG=true&tagFilter={quote(args.tags, safe='')}#timeseries"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    browser = subprocess.Popen(
        ["chromium", *flags, f"--remote-debugging-port={PORT}", f"--window-size={width},{height}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        args.out.write_bytes(asyncio.run(screenshot(url, args.wait, width, height)))
    finally:
        browser.terminate()
        browser.wait()


if __name__ == "__main__":
    main()
