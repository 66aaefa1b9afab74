"""The built-in chat page in a real headless Chromium (Selenium + chromedriver).

Starts the real besterd binary with a WebSocket listener serving the built-in web client
(static_dir = "{web}") and the Python chat handler, then: two browser sessions log in as alice
and bob and join a room, alice says something and bob's page shows it (and alice's too); a wrong
password shows the server's error on the page. Run with .venv/bin/python (scripts/test.sh does).

BESTERD (the binary) defaults to target/debug/besterd.
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BESTERD = os.environ.get("BESTERD", os.path.join(REPO, "target", "debug", "besterd"))
DEADLINE = 20


def add_user(users, name, password):
    subprocess.run(
        [BESTERD, "user", "--users", users, "add", name, "--password-stdin"],
        input=password + "\n", text=True, check=True, capture_output=True,
    )


CHAT = ["python3", os.path.join(REPO, "handlers/python/chat.py")]


class Broker:
    """besterd on ephemeral loopback ports; the ws listener's address comes from the ready file.

    By default the chat handler and the built-in page; `users` shares another broker's store,
    `web` adds keys to the ws listener, `tables` adds TOML tables (e.g. [auth])."""

    def __init__(self, name="browser", chat=CHAT, users=None, static_dir="{web}", web="", tables=""):
        self.dir = tempfile.mkdtemp(prefix="besterd-browser-")
        self.name, self.chat, self.static_dir, self.web_keys, self.tables = name, chat, static_dir, web, tables
        self.users = users or os.path.join(self.dir, "users.json")
        if not users:
            add_user(self.users, "alice", "alice-pw")
            add_user(self.users, "bob", "bob-pw")
            add_user(self.users, "carol", "carol-pw")
        self.log_path = os.path.join(self.dir, "besterd.log")
        self.log = open(self.log_path, "w")
        self.start("127.0.0.1:0")

    def start(self, web_address):
        config = os.path.join(self.dir, "besterd.toml")
        with open(config, "w") as f:
            f.write(f"""[server]
name = "{self.name}"
listen = "127.0.0.1:0"
users = {json.dumps(self.users)}
runtime_dir = {json.dumps(os.path.join(self.dir, "run"))}
[handlers.chat]
command = {json.dumps(self.chat)}
[[listeners]]
name = "web"
kind = "ws"
address = "{web_address}"
static_dir = {json.dumps(self.static_dir)}
{self.web_keys}
{self.tables}
""")
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        self.proc = subprocess.Popen(
            [BESTERD, "serve", "--config", config, "--ready-file", ready],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        started = time.monotonic()
        while True:
            if os.path.exists(ready):
                with open(ready) as f:
                    lines = f.read().splitlines()
                web = [line.split() for line in lines[1:] if line.startswith("web ")]
                if web:
                    self.web = web[0][2]
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("besterd exited before ready:\n" + open(self.log_path).read())
            if time.monotonic() - started > DEADLINE:
                raise RuntimeError("besterd not ready in time:\n" + open(self.log_path).read())
            time.sleep(0.02)

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def restart(self):
        """Stop, then start again on the same WebSocket address."""
        self.terminate()
        self.start(self.web)

    def stop(self):
        self.terminate()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def browser(profile):
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    # The console, for the CSP reports checked below; the network events, for the WebSocket
    # handshake's answer (permessage-deflate).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    driver_path = shutil.which("chromedriver")
    service = Service(executable_path=driver_path) if driver_path else Service()
    return webdriver.Chrome(options=options, service=service)


def websocket_extensions(driver):
    """The Sec-WebSocket-Extensions of the WebSocket handshakes the page made, as Chromium saw
    the server's answers."""
    seen = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.webSocketHandshakeResponseReceived":
            headers = message["params"]["response"].get("headers", {})
            seen.append(next((v for k, v in headers.items()
                              if k.lower() == "sec-websocket-extensions"), None))
    return seen


class PlainPage(http.server.BaseHTTPRequestHandler):
    """A page with no framing rules, for the clickjacking test's control frame."""

    framer = ""

    def do_GET(self):
        text = PlainPage.framer if self.path == "/framer" else "<p>plain page"
        body = f"<!doctype html><title>plain</title>{text}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ChatPage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()
        cls.profiles = tempfile.mkdtemp(prefix="besterd-chromium-")
        cls.drivers = []

    @classmethod
    def tearDownClass(cls):
        for d in cls.drivers:
            d.quit()
        cls.broker.stop()
        shutil.rmtree(cls.profiles, ignore_errors=True)

    def open_page(self, name):
        driver = browser(os.path.join(self.profiles, name))
        self.drivers.append(driver)
        driver.get(f"http://{self.broker.web}/")
        return driver

    def log_in(self, driver, user, password, room="lobby"):
        for field, value in (("username", user), ("password", password), ("room", room)):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "login").click()

    def wait(self, driver, condition, what):
        try:
            return WebDriverWait(driver, DEADLINE).until(condition)
        except Exception:
            with open(self.broker.log_path) as f:
                logs = f.read()[-3000:]
            self.fail(f"timed out waiting for {what}; page: {driver.page_source[:2000]}\nlog: {logs}")

    def test_two_users_chat_in_a_room(self):
        alice = self.open_page("alice")
        bob = self.open_page("bob")
        self.assertEqual(alice.title, "besterd chat")
        self.log_in(alice, "alice", "alice-pw")
        self.wait(alice, EC.text_to_be_present_in_element((By.ID, "status"), "alice in lobby: alice"),
                  "alice to join")
        self.log_in(bob, "bob", "bob-pw")
        self.wait(bob, EC.text_to_be_present_in_element((By.ID, "status"), "bob in lobby: alice, bob"),
                  "bob to join")
        text = alice.find_element(By.ID, "text")
        text.send_keys("hello from alice, über WebSocket")
        alice.find_element(By.ID, "say").click()
        expected = "alicehello from alice, über WebSocket"
        self.wait(bob, EC.text_to_be_present_in_element((By.ID, "messages"), expected), "bob to see it")
        self.wait(alice, EC.text_to_be_present_in_element((By.ID, "messages"), expected), "alice to see it")
        # The sender's box is emptied once the server answered.
        self.wait(alice, lambda d: d.find_element(By.ID, "text").get_attribute("value") == "",
                  "the text box to clear")
        # Chromium offers permessage-deflate; the page's socket has it, and a message long enough
        # to be compressed both ways (the browser's, the server's push) still arrives whole.
        long_text = "the maps are in the blue folder on the second shelf; " * 12
        text.send_keys(long_text)
        alice.find_element(By.ID, "say").click()
        self.wait(bob, EC.text_to_be_present_in_element((By.ID, "messages"), long_text.strip()),
                  "bob to see the long message")
        for page in (alice, bob):
            self.assertEqual(websocket_extensions(page),
                             ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"])
        self.assertEqual(bob.find_element(By.ID, "error").text, "")
        # Logged in: the form is gone, the room is shown.
        self.assertFalse(bob.find_element(By.ID, "login-form").is_displayed())
        self.assertTrue(bob.find_element(By.ID, "chat").is_displayed())

    def test_a_wrong_password_shows_the_error(self):
        page = self.open_page("mallory")
        self.log_in(page, "alice", "not-her-password")
        self.wait(page, EC.text_to_be_present_in_element((By.ID, "error"), "invalid username or password (auth_failed)"),
                  "the error")
        self.assertFalse(page.find_element(By.ID, "chat").is_displayed())
        self.assertTrue(page.find_element(By.ID, "login-form").is_displayed())

    def test_another_site_cannot_frame_the_page(self):
        # Clickjacking: a page of another origin puts the chat page in a frame. The browser
        # refuses it (frame-ancestors 'none', X-Frame-Options: DENY) and shows its error page in
        # the frame; a plain page of the framing site loads in the frame beside it, so framing as
        # such works here. (Both sites are on loopback: the browser blocks a public page from
        # framing a local one whatever its headers say.)
        plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PlainPage)
        threading.Thread(target=plain.serve_forever, daemon=True).start()
        self.addCleanup(plain.shutdown)
        other = f"127.0.0.1:{plain.server_address[1]}"
        page = browser(os.path.join(self.profiles, "framer"))
        self.drivers.append(page)
        web = self.broker.web
        PlainPage.framer = (f'<iframe id="page" src="http://{web}/"></iframe>'
                            f'<iframe id="missing" src="http://{other}/plain"></iframe>')
        page.get(f"http://{other}/framer")

        def frame_href(frame_id):
            def read(driver):
                driver.switch_to.default_content()
                driver.switch_to.frame(driver.find_element(By.ID, frame_id))
                href = driver.execute_script("return document.readyState == 'complete' && location.href")
                driver.switch_to.default_content()
                return href if href and href != "about:blank" else False
            return read

        self.assertEqual(self.wait(page, frame_href("missing"), "the plain frame"), f"http://{other}/plain")
        self.assertEqual(self.wait(page, frame_href("page"), "the refused frame"),
                         "chrome-error://chromewebdata/")
        # The page itself, opened directly, loads with no policy violation on the console.
        own = self.open_page("direct")
        self.assertEqual(own.title, "besterd chat")
        violations = [e["message"] for e in own.get_log("browser")
                      if "Content Security Policy" in e["message"]]
        self.assertEqual(violations, [])

    def test_zy_a_kicked_page_comes_back_with_its_resume_token(self):
        page = self.open_page("kicked")
        self.log_in(page, "carol", "carol-pw", room="kick")
        self.wait(page, EC.text_to_be_present_in_element((By.ID, "status"), "carol in kick: carol"),
                  "carol to join")
        with open(self.broker.log_path) as f:
            before = len(f.read())
        socket = os.path.join(self.broker.dir, "run", "besterd.ctl")
        subprocess.run([BESTERD, "ctl", "--socket", socket, "kick", "--user", "carol"],
                       check=True, capture_output=True)

        def back(driver):
            with open(self.broker.log_path) as f:
                return "user=carol logged in" in f.read()[before:]
        self.wait(page, back, "carol to log in again")
        self.wait(page, EC.text_to_be_present_in_element((By.ID, "status"), "carol in kick: carol"),
                  "the page to join again")
        with open(self.broker.log_path) as f:
            after = f.read()[before:]
        # No password this time: the resume token of the last login.
        self.assertRegex(after, "user=carol logged in from .* by resume token")
        self.assertNotRegex(after, r"user=carol logged in from \S+\n")

    def test_zz_the_page_reconnects_after_a_restart(self):
        # Runs last (name order): it restarts the broker under the other tests' pages.
        carol = self.open_page("restart")
        self.log_in(carol, "bob", "bob-pw", room="again")
        self.wait(carol, EC.text_to_be_present_in_element((By.ID, "status"), "bob in again: bob"),
                  "bob to join")
        with open(self.broker.log_path) as f:
            before = len(f.read())
        self.broker.restart()
        # bester.js reconnects with backoff, logs in again, and the page joins the room again
        # (the restarted chat handler has no rooms).
        self.wait(carol, EC.text_to_be_present_in_element((By.ID, "status"), "bob in again: bob"),
                  "the page to come back")
        with open(self.broker.log_path) as f:
            after_restart = f.read()[before:]
        # The resume token of the first run is refused (a new random token key), so bester.js
        # logs in with the password, at the same URL.
        self.assertRegex(after_restart, "token login from .* refused: resume_refused")
        self.assertIn("user=bob logged in", after_restart)
        carol.find_element(By.ID, "text").send_keys("after the restart")
        carol.find_element(By.ID, "say").click()
        self.wait(carol, EC.text_to_be_present_in_element((By.ID, "messages"), "bobafter the restart"),
                  "the line said after the restart")


class GreeterRedirect(unittest.TestCase):
    """A greeter broker serves the chat page; its "chat" handler (tests/handlers/greeter.py)
    redirects every request, with a minted resume token, to a session broker that shares its
    token key and user store and runs the real chat handler. bester.js follows: the page ends up
    chatting on the session broker, which logged the users in by token (no password sent there).

    The greeter serves the page from a directory (a copy of src/web) rather than the built-in one:
    the built-in page's Content-Security-Policy (connect-src 'self') lets it talk to its own
    listener only."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="besterd-greeter-")
        key = os.path.join(cls.tmp, "token.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex())
        auth = f"[auth]\ntoken_secret_file = {json.dumps(key)}\n"
        site = os.path.join(cls.tmp, "site")
        os.mkdir(site)
        for name in ("index.html", "bester.js", "chat.js", "chat.css"):
            shutil.copy(os.path.join(REPO, "src", "web", name), site)
        shutil.copy(os.path.join(REPO, "clients", "node", "lib", "protocol.js"), site)  # bester.js imports it
        target = os.path.join(cls.tmp, "target")
        with open(target, "w") as f:
            f.write("bester+ws://127.0.0.1:1")  # until the session broker is up
        greeter = ["python3", os.path.join(REPO, "tests/handlers/greeter.py"), target]
        cls.greeter = Broker(name="greeter", chat=greeter, static_dir=site, tables=auth)
        cls.session = Broker(name="session", users=cls.greeter.users, tables=auth,
                             web=f"allowed_origins = {json.dumps(['http://' + cls.greeter.web])}")
        with open(target, "w") as f:
            f.write(f"bester+ws://{cls.session.web}")
        cls.profiles = tempfile.mkdtemp(prefix="besterd-chromium-")
        cls.drivers = []

    @classmethod
    def tearDownClass(cls):
        for d in cls.drivers:
            d.quit()
        cls.greeter.stop()
        cls.session.stop()
        shutil.rmtree(cls.profiles, ignore_errors=True)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def wait(self, driver, condition, what):
        try:
            return WebDriverWait(driver, DEADLINE).until(condition)
        except Exception:
            logs = ""
            for broker in (self.greeter, self.session):
                with open(broker.log_path) as f:
                    logs += f"\n{broker.name}: " + f.read()[-2000:]
            self.fail(f"timed out waiting for {what}; page: {driver.page_source[:2000]}\nlogs: {logs}")

    def test_the_page_follows_the_redirect_and_chats_on_the_session_broker(self):
        pages = {}
        for user in ("alice", "bob"):
            page = browser(os.path.join(self.profiles, user))
            self.drivers.append(page)
            page.get(f"http://{self.greeter.web}/")
            ChatPage.log_in(self, page, user, f"{user}-pw")
            pages[user] = page
            self.wait(page, EC.text_to_be_present_in_element((By.ID, "status"), f"{user} in lobby:"),
                      f"{user} to join")
        pages["alice"].find_element(By.ID, "text").send_keys("hello from the session broker")
        pages["alice"].find_element(By.ID, "say").click()
        expected = "alicehello from the session broker"
        self.wait(pages["bob"], EC.text_to_be_present_in_element((By.ID, "messages"), expected),
                  "bob to see it")
        self.assertEqual(pages["bob"].find_element(By.ID, "error").text, "")
        with open(self.session.log_path) as f:
            session_log = f.read()
        with open(self.greeter.log_path) as f:
            greeter_log = f.read()
        # The greeter checked the passwords and redirected; the session broker took tokens only.
        for user in ("alice", "bob"):
            self.assertIn(f"user={user} redirected to bester+ws://{self.session.web}", greeter_log)
            self.assertRegex(session_log, f"user={user} logged in from .* by resume token")
        self.assertEqual(session_log.count("logged in from"), 2, session_log)


if __name__ == "__main__":
    if not os.path.exists(BESTERD):
        sys.exit(f"{BESTERD} not found: run cargo build first")
    unittest.main(verbosity=2)
