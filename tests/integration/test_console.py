"""`skylift console` in a real headless Chromium (Debian's, through its chromedriver): real training,
a real study, a real `skylift serve`, no mocks.

Screenshots of each page go to a pytest temp folder, and also to $SKYLIFT_SCREENSHOTS when set
(`SKYLIFT_SCREENSHOTS=docs/img/console pytest tests/integration/test_console.py` refreshes the
README's pictures).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skylift.registry import Registry
from skylift.security.apikeys import KeyStore
from skylift.spec import load_spec, parse_spec
from skylift.train import fit
from tests.conftest import EXAMPLE, finish, skylift_process
from tests.integration.serve_helpers import Server, running
from tests.integration.task_texts import PROSE

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = ('<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>")
LIVE_SPEC = """name: live-mlp
data: {train: "builtin:digits28", test_split: 0.2, validation_split: 0.1}
model:
  input_shape: [784]
  layers:
    - dense: {units: 768, activation: relu}
    - dense: {units: 768, activation: relu}
    - dense: {units: 10}
train: {epochs: 30, batch_size: 16, optimizer: {name: adam, lr: 0.001}, threads: 1, register_best: false}
distributed: {workers: 1}
"""


# -- the home: a study, three trained models, API keys ---------------------------------------------


def _hostile_classifier(home: Path) -> None:
    """A classifier whose class names are markup: every page must show them as text."""
    rng = np.random.default_rng(0)
    rows = ["a,b,c,d,label"]
    for i in range(120):
        x = rng.normal(size=4) + 2 * (i % 2)
        label = HOSTILE[i % 2].replace('"', '""')
        rows.append(",".join(f"{v:.4f}" for v in x) + f',"{label}"')
    csv = home / "hostile.csv"
    csv.write_text("\n".join(rows) + "\n")
    spec = {
        "name": "hostile",
        "data": {"train": str(csv), "label_column": "label", "test_split": 0.25},
        "model": {"layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 2}}]},
        "train": {"epochs": 2, "batch_size": 16, "threads": 1},
        "distributed": {"workers": 1},
    }
    fit(parse_spec(spec), home=home, run_id="hostile-run")


def _tiny_lm(home: Path) -> None:
    corpus = home / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"part{i}.txt").write_text(PROSE * (i + 1))
    spec = {
        "name": "tiny-lm",
        "task": "language_modeling",
        "data": {"train": str(corpus), "tokenizer": {"train": "bpe", "vocab_size": 300}, "block_size": 64},
        "model": {
            "layers": [
                {"token_embedding": {"dim": 32}},
                {
                    "decoder_block": {
                        "heads": 2,
                        "mlp": "swiglu",
                        "norm": "rms",
                        "positions": "rope",
                        "repeat": 1,
                    }
                },
                {"norm": {"kind": "rms"}},
                {"lm_head": {"tie_embedding": True}},
            ]
        },
        "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.003}, "threads": 1},
        "distributed": {"workers": 1},
    }
    fit(parse_spec(spec), home=home, run_id="tiny-lm-run")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("console-home")
    # The study trains in its own processes while this one trains the other models.
    study = skylift_process(
        home, "tune", str(EXAMPLE), "--trials", "2", "--parallel", "2", "--study", "digits",
        "--set", "train.epochs=2", "--sampler", "random", "--seed", "1", "--pruner", "none",
    )  # fmt: skip
    _hostile_classifier(home)
    _tiny_lm(home)
    code, out, err = finish(study, timeout=300)
    assert code == 0, out + err
    fit(load_spec(EXAMPLE, ["train.epochs=2"]), home=home, run_id="digits-run")  # mnist-mlp:2
    Registry(home).promote("mnist-mlp", 2, "production")
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    made = {}
    for name, scopes in (("ops", ("predict", "metrics", "admin")), ("viewer", ("predict",))):
        made[name] = store.create(name, scopes)[0]
    return made


# -- processes: a server, two consoles (open on loopback; with --require-key) ----------------------


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    with running(home, "mnist-mlp@production", "tiny-lm", "--replicas", "1", key=keys["ops"]) as s:
        yield s


def _console(home: Path, *args: str) -> Iterator[str]:
    proc = skylift_process(home, "console", "--port", "0", *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    try:
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        yield match.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _code, _, err = finish(proc, timeout=30)
        assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def console(home: Path, server: Server) -> Iterator[str]:
    yield from _console(home)


@pytest.fixture(scope="module")
def keyed_console(home: Path, keys: dict[str, str]) -> Iterator[str]:
    yield from _console(home, "--require-key")


# -- the browser -----------------------------------------------------------------------------------


class Browser:
    """One headless Chromium for the module; every page it opens must log no error."""

    def __init__(self, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):  # fmt: skip
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.shots = shots
        self.extra = (
            Path(os.environ["SKYLIFT_SCREENSHOTS"]) if os.environ.get("SKYLIFT_SCREENSHOTS") else None
        )

    def errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def open(self, url: str, expect_errors: bool = False) -> None:
        """Load `url` and wait for its scripts; no console error unless `expect_errors` (an error
        page's own status is logged by Chromium as one)."""
        self.errors()  # drain what came before
        self.driver.get(url)
        self.wait(lambda: self.js("return document.readyState") == "complete")
        time.sleep(0.3)  # scripts run after load; charts draw
        found = self.errors()
        if not expect_errors:
            assert not found, f"{url}: {found}"

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda _: condition(), what)

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def shot(self, name: str) -> None:
        """A picture of the whole page (the window grown to its height, up to 2400 px)."""
        path = self.shots / f"{name}.png"
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, min(max(int(height), 1000), 2400))
        self.js("window.scrollTo(0, 0)")
        time.sleep(0.3)  # charts follow the resize
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1400, 1000)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("console-screenshots"))
    try:
        yield b
    finally:
        b.quit()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


# -- the tests -------------------------------------------------------------------------------------


def test_every_page_loads_without_console_errors(home: Path, console: str, browser: Browser) -> None:
    pid = json.loads(_get(f"{console}/api/endpoints")[1])["endpoints"][0]["pid"]
    trial_run = next(p.name for p in (home / "runs").iterdir() if p.name.startswith("digits-t"))
    pages = {
        "runs": ("/runs", "#runs-table tbody tr"),
        "run": ("/runs/digits-run", "#chart-confusion .main-svg"),
        "compare": (f"/compare?run=digits-run&run={trial_run}", "#chart-compare .main-svg"),
        "studies": ("/studies", "#studies-table tbody tr"),
        "study": ("/studies/digits", "#figure-history .main-svg"),
        "models": ("/models", "#models-table tbody tr"),
        "model": ("/models/mnist-mlp", "#versions-table tbody tr"),
        "endpoints": ("/endpoints", "#endpoints-table tbody tr"),
        "endpoint": (f"/endpoints/{pid}", "#pad-mnist-mlp"),
    }
    found = "return document.querySelector(arguments[0]) !== null"
    for name, (path, ready) in pages.items():
        browser.open(console + path)
        browser.wait(lambda css=ready: browser.js(found, css), what=f"{path}: {ready}")
        assert not browser.errors(), path
        browser.shot(name)
    # the study's trials link to their runs, and its figures are Plotly's (interactive)
    browser.open(console + "/studies/digits")
    links = browser.js("return [...document.querySelectorAll('#trials-table a')].map(a => a.textContent)")
    assert len(links) == 2 and all(link.startswith("digits-t") for link in links)
    assert browser.js("return document.getElementById('figure-importance').data.length") >= 1
    # lineage: the study's model links back to its run and study
    browser.open(console + "/models/mnist-mlp?version=1")
    assert "digits" in browser.text("#lineage") and browser.text("#verify").startswith("verified")


def test_a_run_started_now_appears_and_its_curve_grows_live(
    home: Path, console: str, browser: Browser
) -> None:
    spec = home / "live.yaml"
    spec.write_text(LIVE_SPEC)
    browser.open(console + "/runs")
    browser.js("window.__still = 1")
    train = skylift_process(home, "train", str(spec), "--run-id", "live-run")
    try:
        browser.wait(lambda: browser.js("return !!document.querySelector('tr[data-run=\"live-run\"]')"),
                     timeout=60, what="the new run in the list")  # fmt: skip
        assert browser.js("return window.__still") == 1  # the list updated itself: no reload
        browser.open(console + "/runs/live-run")
        browser.js("window.__still = 1")
        points = "const d = document.getElementById('chart-loss').data; return d?.length ? d[0].x.length : 0"
        status = "return document.getElementById('run-status').textContent"
        seen = set()
        browser.wait(lambda: browser.js(points) >= 1, timeout=60, what="a first epoch")
        while browser.js(status) == "running" and len(seen) < 3:
            seen.add(browser.js(points))
            if len(seen) == 2:
                browser.shot("run-live")
            time.sleep(0.3)
        assert len(seen) >= 2, f"the curve did not grow while the run trained: {seen}"
        browser.wait(lambda: browser.js(status) == "finished", timeout=120, what="the run to finish")
        browser.wait(lambda: browser.js(points) == 30, what="all 30 epochs drawn")
        browser.wait(lambda: browser.js("return !document.getElementById('chart-confusion').hidden"))
        assert browser.js("return window.__still") == 1  # all of it without a reload
        assert not browser.errors()
    finally:
        code, _out, err = finish(train, timeout=180)
    assert code == 0, err


def test_promote_from_the_page_moves_the_alias(home: Path, console: str, browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    browser.open(console + "/models/mnist-mlp")
    Select(browser.find("#promote-version")).select_by_value("1")
    alias = browser.find("#promote-alias")
    alias.clear()
    alias.send_keys("staging")
    browser.find("#promote-button").click()
    browser.wait(lambda: "staging now points at version 1" in browser.text("#note"))
    assert Registry(home).resolve("mnist-mlp@staging") == ("mnist-mlp", 1)
    assert "staging" in browser.text("#versions-table")
    browser.shot("model")
    # Bad input: a clear message on the page, the registry unchanged, never a traceback.
    alias = browser.find("#promote-alias")
    alias.clear()
    alias.send_keys("Not An Alias!")
    browser.find("#promote-button").click()
    browser.wait(lambda: "is not allowed" in browser.text("#action-error"))
    assert "Traceback" not in browser.driver.page_source
    browser.errors()  # the 400 itself is logged by Chromium


def test_playground_gets_real_predictions_from_skylift_serve(
    home: Path, console: str, server: Server, browser: Browser, keys: dict[str, str]
) -> None:
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains

    from skylift import load_model, read_source

    pid = server.proc.pid
    browser.open(f"{console}/endpoints/{pid}")
    browser.find("#endpoint-key").send_keys(keys["ops"])  # the server asks for keys
    # An uploaded 28x28 digit: the answer must be the model's own for those exact pixels.
    data, _ = read_source("builtin:digits28")
    pixels = np.round(data.x[7].reshape(28, 28) * 255).astype(np.uint8)
    png = home / "digit.png"
    Image.fromarray(pixels, mode="L").save(png)
    model = load_model("mnist-mlp@production", home=home)
    import torch

    with torch.no_grad():
        probs = torch.softmax(
            model.module(torch.tensor(pixels.reshape(1, 784) / 255.0, dtype=torch.float32)), 1
        )
    expected = str(model.classes[int(probs.argmax())])
    classes = [str(c) for c in model.classes]
    browser.find("#upload-mnist-mlp").send_keys(str(png))
    browser.wait(
        lambda: browser.js("return document.getElementById('label-mnist-mlp')?.textContent") == expected
    )
    shown = json.loads(browser.js("return document.getElementById('answer-mnist-mlp').dataset.probabilities"))
    np.testing.assert_allclose(shown, probs[0].numpy(), atol=1e-5)
    # A digit drawn with the mouse gets an answer too.
    pad = browser.find("#pad-mnist-mlp")
    ActionChains(browser.driver).move_to_element_with_offset(pad, -30, -80).click_and_hold().move_by_offset(
        0, 160
    ).release().perform()  # a "1": one stroke down the middle
    browser.js("document.getElementById('label-mnist-mlp').remove()")
    browser.find("#predict-mnist-mlp").click()
    browser.wait(
        lambda: browser.js("return document.getElementById('label-mnist-mlp')?.textContent") in classes
    )
    # The language model streams a chat answer.
    browser.find("#chat-input-tiny-lm").send_keys("There were four of us")
    browser.find("#chat-send-tiny-lm").click()
    browser.wait(
        lambda: browser.js("return document.querySelector('#chat-tiny-lm .reply')?.dataset.done") == "1"
    )
    assert not browser.js("return document.querySelector('#chat-tiny-lm .error')")
    # The live traffic chart picks the predictions up from the server's /metrics, every 2 s.
    traffic = "return document.getElementById('chart-throughput').data[0].x.length"
    for _ in range(3):
        browser.find("#predict-mnist-mlp").click()
        time.sleep(0.7)
    browser.wait(lambda: browser.js(traffic) >= 3, what="three traffic points")
    assert not browser.errors()
    browser.shot("endpoint")


def test_hostile_names_are_shown_as_text(console: str, browser: Browser) -> None:
    browser.open(console + "/models/hostile")
    assert browser.text("#answers") == ", ".join(HOSTILE)
    browser.open(console + "/runs/hostile-run")
    browser.wait(lambda: browser.js("return document.querySelector('#chart-confusion .xtick') !== null"))
    ticks = browser.js(
        "return [...document.querySelectorAll('#chart-confusion .xtick text')].map(t => t.textContent)"
    )
    assert sorted(ticks) == sorted(HOSTILE)
    assert browser.js("return window.__xss") is None
    browser.open(console + "/runs/%3Cimg%20src%3Dx%20onerror%3D%22window.__xss%3D3%22%3E", expect_errors=True)
    assert '<img src=x onerror="window.__xss=3">' in browser.text("#error-message")
    assert browser.js("return window.__xss") is None


def test_bad_requests_get_a_clear_error_never_a_traceback(console: str, browser: Browser) -> None:
    for path, status, says in (
        ("/models/no-such-model", 404, "no model named 'no-such-model'"),
        ("/runs/no-such-run", 404, "no run 'no-such-run'"),
        ("/studies/nope", 404, "no study 'nope'"),
        ("/endpoints/1", 404, "no running skylift serve"),
        ("/compare?run=digits-run", 400, "compare takes 2 to 4 runs"),
        ("/models/hostile?version=x", 400, "a version is a whole number"),
    ):
        code, body, _ = _get(console + path)
        body = html.unescape(body)
        assert code == status and says in body and "Traceback" not in body, (path, code, body[:300])
    # a delete refused by the registry (an alias points at the version), said on the page
    browser.open(console + "/models/mnist-mlp?version=2")
    browser.js("document.getElementById('delete-form').submit()")  # skips the confirm() dialog
    browser.wait(lambda: "target of alias production" in browser.text("#action-error"))
    browser.errors()
    # the open console answers loopback names only (a DNS-rebinding page is refused)
    code, _, _ = _get(console + "/api/runs", {"Host": "attacker.example"})
    assert code == 421


def test_with_a_key_required_pages_need_a_sign_in_and_actions_the_admin_scope(
    home: Path, keyed_console: str, browser: Browser, keys: dict[str, str]
) -> None:
    url = keyed_console
    code, _, headers = _get(url + "/runs")
    assert code == 303 and headers["location"].startswith("/login")
    assert _get(url + "/api/runs")[0] == 401
    assert _get(url + "/api/runs", {"Authorization": "Bearer sk_00000000_" + "A" * 43})[0] == 401
    assert _get(url + "/api/runs", {"Authorization": f"Bearer {keys['viewer']}"})[0] == 200
    browser.driver.delete_all_cookies()
    browser.open(url + "/models/mnist-mlp")
    assert "/login" in browser.driver.current_url
    browser.shot("login")
    browser.find("#key").send_keys("sk_wrong")
    browser.find("#login-form button").click()
    browser.wait(lambda: "invalid" in browser.text("#login-error"))
    browser.errors()
    # a predict-only key sees the pages, and its promote is refused with 403
    browser.find("#key").send_keys(keys["viewer"])
    browser.find("#login-form button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/models/mnist-mlp"))
    assert keys["viewer"] not in browser.driver.page_source and "viewer" in browser.text(".who")
    before = Registry(home).resolve("mnist-mlp@production")
    browser.find("#promote-button").click()
    browser.wait(lambda: "lacks the 'admin' scope" in browser.text("#error-message"))
    browser.errors()
    assert Registry(home).resolve("mnist-mlp@production") == before
    # an admin key may
    browser.find(".who button").click()
    browser.wait(lambda: "/login" in browser.driver.current_url)
    browser.find("#key").send_keys(keys["ops"])
    browser.find("#login-form button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/runs"))
    browser.open(url + "/models/mnist-mlp?version=1")
    browser.find("#promote-alias").clear()
    browser.find("#promote-alias").send_keys("canary")
    browser.find("#promote-button").click()
    browser.wait(lambda: "canary now points at version 1" in browser.text("#note"))
    audit = (home / "audit.log").read_text()
    assert '"denied: invalid key"' in audit and "ok: promote mnist-mlp:1" in audit
    assert "denied: API key 'viewer' lacks the 'admin' scope" in audit
    assert all(k not in audit for k in keys.values())
    browser.driver.delete_all_cookies()


def test_a_console_off_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    proc = skylift_process(tmp_path, "console", "--host", "0.0.0.0", "--port", "0")
    code, _out, err = finish(proc, timeout=60)
    assert code == 2 and "needs API keys" in err and "skylift keys create" in err, err
