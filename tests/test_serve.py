"""``avloc serve``: the input checks and the page's pieces without a browser, then the page itself
in Debian's headless Chromium (selenium): upload, localise, overlay, plot, slider, downloads, and
no request leaving the machine."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avloc.cli import main
from avloc.io.decode import iter_frames, probe
from avloc.io.write import write_video
from avloc.serve import WEB_EXTRA, StepView, check_video, demo_videos, localise, probability_plot, step_image
from avloc.types import AvlocError
from conftest import make_tone_video

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# What works on these machines: no sandbox as root, no GPU, and none of Chromium's own traffic.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1420", "--hide-scrollbars")


def _one_line(error: AvlocError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


# --- input checks (no gradio, no browser) ---


def test_check_video_accepts_a_short_video_with_sound(tmp_path):
    video = make_tone_video(tmp_path / "tone.mp4", seconds=1.0)
    info = check_video(video, max_seconds=2, max_mb=1)
    assert info.has_audio and info.duration == pytest.approx(1.0, abs=0.1)


def test_check_video_refuses_a_file_that_is_not_a_video(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("shopping list\n")
    with pytest.raises(AvlocError) as error:
        check_video(notes, max_seconds=120, max_mb=200)
    message = _one_line(error.value)
    assert message.startswith("notes.mp4: not a readable video file") and str(tmp_path) not in message


def test_check_video_refuses_a_video_that_is_too_long(tmp_path):
    video = make_tone_video(tmp_path / "long.mp4", seconds=2.0)
    with pytest.raises(AvlocError) as error:
        check_video(video, max_seconds=1.5, max_mb=200)
    assert _one_line(error.value) == "long.mp4: too long (2.0 s; this server takes at most 1.5 s)"


def test_check_video_refuses_a_file_that_is_too_large_before_opening_it(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 300_000)  # not a video either: size is checked first
    with pytest.raises(AvlocError) as error:
        check_video(big, max_seconds=120, max_mb=0.25)
    assert _one_line(error.value) == "big.mp4: too large (0.3 MB; this server takes at most 0.25 MB)"


def test_check_video_refuses_a_video_without_sound(tmp_path):
    silent = tmp_path / "silent.mp4"
    write_video(silent, np.zeros((8, 32, 32, 3), dtype=np.uint8), 8)
    with pytest.raises(AvlocError) as error:
        check_video(silent, max_seconds=120, max_mb=200, name="my clip.mp4")
    assert _one_line(error.value).startswith("my clip.mp4: no audio stream")


def test_demo_videos_are_the_bundled_clips():
    clips = demo_videos()
    assert len(clips) >= 2
    for path, label in clips:
        assert path.is_file() and path.suffix == ".mp4" and label.startswith(path.stem)


# --- the page's pieces (no gradio) ---


def test_localise_writes_outputs_and_each_step_can_be_shown(tmp_path):
    video = make_tone_video(tmp_path / "tone.mp4", seconds=1.0, size=48)
    result = localise(video, tmp_path / "runs", max_seconds=5, max_mb=1)
    assert result.out.parent == tmp_path / "runs"
    assert result.overlay.is_file() and probe(result.overlay).has_audio
    assert [path.name for path in result.downloads] == ["boxes.json", "heatmaps.npz"]
    boxes = json.loads(result.downloads[0].read_text())
    view = result.view
    assert len(boxes["frames"]) == len(view.times) == 4  # 1 s at the default model's 4 steps per second
    assert "4 steps at 4 per second" in result.summary
    for k in (0, len(view.times) - 1):
        image = step_image(view, k)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    # The step's frame is the one shown at the step's time: step 1 (0.375 s) shows video frame 3 (of 8 per
    # second, each a flat colour); with a flat map and no boxes only the caption band is drawn over it.
    frames = [frame for _, frame in iter_frames(video)]
    bare = replace(view, heatmaps=np.zeros_like(view.heatmaps), boxes=[np.zeros((0, 4))] * 4, scores=[np.zeros(0)] * 4)
    np.testing.assert_array_equal(step_image(bare, 1)[-10:], frames[3][-10:])
    assert not np.array_equal(frames[2][-10:], frames[3][-10:])
    # A map with a peak at the bottom right and a box around it: drawn over the same frame.
    heatmaps = np.zeros_like(view.heatmaps)
    heatmaps[1, -1, -1] = 1.0
    peaked = replace(bare, heatmaps=heatmaps, boxes=[np.array([[24.0, 24.0, 48.0, 48.0]])] * 4,
                     scores=[np.array([0.9])] * 4)
    image = step_image(peaked, 1)
    assert not np.array_equal(image[-10:], frames[3][-10:])
    np.testing.assert_array_equal(image[20:30, :10], frames[3][20:30, :10])  # far from the peak and the box
    with pytest.raises(AvlocError, match="step 4 is outside the 4 steps of tone.mp4"):
        step_image(view, 4)
    figure = probability_plot(view)
    lines = figure.axes[0].get_lines()
    assert len(lines) == min(5, len(view.classes)) and len(lines[0].get_xdata()) == 4


def test_only_the_newest_runs_are_kept_and_a_failed_run_leaves_no_folder(tmp_path, monkeypatch):
    video = make_tone_video(tmp_path / "tone.mp4", seconds=1.0, size=48)
    runs = tmp_path / "runs"
    made = [localise(video, runs, max_seconds=5, max_mb=1, keep_runs=2).out for _ in range(3)]
    assert sorted(path.name for path in runs.iterdir()) == sorted(path.name for path in made[1:])  # the oldest went
    assert all((path / "overlay.mp4").is_file() for path in made[1:])

    def broken(*args, **kwargs):
        raise AvlocError(f"{video}: damaged past its headers")

    monkeypatch.setattr("avloc.localize_video.localize_video", broken)
    with pytest.raises(AvlocError, match="^tone.mp4: damaged past its headers"):
        localise(video, runs, max_seconds=5, max_mb=1, keep_runs=2)
    assert sorted(path.name for path in runs.iterdir()) == sorted(path.name for path in made[1:])


def test_localise_refuses_before_writing_anything(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with pytest.raises(AvlocError, match="^notes.mp4: not a readable video file"):
        localise(notes, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_probability_plot_without_a_classifier_says_so():
    view = StepView(video=Path("x.mp4"), duration=1.0, fps=4.0, times=np.arange(4) / 4 + 0.125,
                    heatmaps=np.zeros((4, 2, 2)), probabilities=np.zeros((4, 0)), classes=[],
                    boxes=[np.zeros((0, 4))] * 4, scores=[np.zeros(0)] * 4)
    assert "no classifier" in probability_plot(view).axes[0].texts[0].get_text()


# --- the command line ---


def test_serve_without_gradio_fails_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the web extra were not installed
    assert main(["serve", "--work", "unused"]) == 2
    assert capsys.readouterr().err == f"avloc: error: {WEB_EXTRA}\n"
    assert not Path("unused").exists()


@pytest.mark.parametrize("flags, message", [(["--max-seconds", "0"], "--max-seconds"), (["--max-mb", "-1"], "--max-mb"),
                                            (["--port", "70000"], "--port"), (["--keep-runs", "0"], "--keep-runs")])
def test_serve_bad_flags_give_one_line(flags, message, capsys):
    assert main(["serve", *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("avloc: error: ") and message in error and error.count("\n") == 1


# --- the page in a real browser ---


def _browser_missing() -> str | None:
    for module, extra in (("gradio", "the web extra: pip install -e '.[web]'"), ("selenium", "the web extra: pip install -e '.[web]'")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({extra})"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, seconds: float, what: str, server: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if server is not None and server.poll() is not None:
            pytest.fail(f"the server stopped (exit {server.returncode}) while waiting for {what}:\n"
                        f"{log.read_text() if log else ''}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds:g} s waiting for {what}" + (f":\n{log.read_text()}" if log else ""))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _shrink_png(source: Path, target: Path) -> None:
    """A small copy of a screenshot for the docs (palette PNG)."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@pytest.mark.slow
def test_page_localises_an_uploaded_clip_in_chromium(tmp_path):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    clip = demo_videos()[0][0]
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    work, home, cwd = tmp_path / "work", tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "server.log"
    # HOME and the working folder are empty and must stay so: the server writes only under --work.
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MPLCONFIGDIR", None)
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "avloc", "serve", "--port", str(port), "--work", str(work),
                                   "--device", "cpu", "--max-seconds", "30"],
                                  cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    driver = None
    try:
        _wait_for(lambda: _answers(url), 180, "the server to answer", server, log)
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(60)

        def upload(path: Path) -> None:
            driver.get(url)
            field = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#input-video input[type=file]"), 60,
                              "the upload field")
            field[0].send_keys(str(path))
            _wait_for(lambda: not driver.find_elements(By.CSS_SELECTOR, "#input-video input[type=file]")
                      or driver.find_elements(By.CSS_SELECTOR, "#input-video video"), 60, "the upload")
            driver.find_element(By.ID, "localise").click()

        # A file that is not a video is refused with a message on the page.
        upload(notes)
        _wait_for(lambda: "notes.mp4: not a readable video file" in driver.find_element(By.TAG_NAME, "body").text,
                  60, "the refusal message", server, log)

        upload(clip)

        def finished() -> list:
            toasts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]") if e.text]
            if toasts:
                pytest.fail(f"the page showed an error: {toasts}\n{log.read_text()}")
            return [e for e in driver.find_elements(By.ID, "status") if "steps at" in e.text]

        status = _wait_for(finished, 300, "the localisation", server, log)[0]
        assert f"{clip.name}: 16 steps at 4 per second" in status.text  # a 4-second demo clip
        overlay = _wait_for(lambda: [v for v in driver.find_elements(By.CSS_SELECTOR, "#overlay video")
                                     if v.get_attribute("src")], 30, "the overlay video")[0]
        assert _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#probabilities img"), 30, "the plot")
        frame = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#step-frame img"), 30, "the step frame")[0]
        downloads = driver.find_element(By.ID, "downloads").text
        assert "boxes.json" in downloads and "heatmaps.npz" in downloads

        # The overlay is served with its sound, and the browser can play it.
        source = overlay.get_attribute("src")
        served = tmp_path / "served.mp4"
        with urllib.request.urlopen(source, timeout=30) as response:
            served.write_bytes(response.read())
        assert probe(served).has_audio
        assert driver.execute_script("return arguments[0].canPlayType('video/mp4; codecs=\"avc1.42E01E, mp4a.40.2\"')",
                                     overlay) in ("probably", "maybe")
        _wait_for(lambda: driver.execute_script("return arguments[0].readyState", overlay) >= 1, 30,
                  "the overlay's metadata")
        assert driver.execute_script("return arguments[0].duration", overlay) == pytest.approx(4.0, abs=0.2)

        # Scrubbing: moving the slider shows another step's frame.
        first = frame.get_attribute("src")
        slider = driver.find_element(By.CSS_SELECTOR, "#step input[type=range]")
        for _ in range(5):
            slider.send_keys(Keys.ARROW_RIGHT)
        _wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#step-frame img").get_attribute("src") != first, 60,
                  "the slider to show another step")
        assert driver.find_element(By.CSS_SELECTOR, "#step input[type=number]").get_attribute("value") == "5"

        time.sleep(1.0)  # let the new frame paint
        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "serve.png"
        assert driver.save_screenshot(str(shot))
        if os.environ.get("AVLOC_SERVE_SCREENSHOT"):  # how docs/serve.png is made
            _shrink_png(shot, Path(os.environ["AVLOC_SERVE_SCREENSHOT"]))

        # Nothing was fetched from anywhere but this server (no CDN, no web fonts, no analytics).
        requested = [json.loads(entry["message"])["message"]["params"]["request"]["url"]
                     for entry in driver.get_log("performance")
                     if json.loads(entry["message"])["message"]["method"] == "Network.requestWillBeSent"]
        assert requested
        network = [u for u in requested if u.startswith(("http:", "https:", "ws:", "wss:"))]  # not chrome://, data:
        assert any(u.startswith(url) for u in network)
        outside = [u for u in network if not u.startswith((url, url.replace("http", "ws", 1)))]
        assert not outside, f"the page fetched from elsewhere: {outside[:5]}"
    finally:
        if driver is not None:
            driver.quit()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, log.read_text()
    assert sorted(p.name for p in home.iterdir()) == [] and sorted(p.name for p in cwd.iterdir()) == []
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and sorted(p.name for p in runs[0].iterdir()) == sorted(
        ["overlay.mp4", "boxes.json", "heatmaps.npz", "contact_sheet.png"])
    shutil.rmtree(work, ignore_errors=True)
