"""The handler half as besterd runs it: exit statuses (EOF 0, broken frame 1, no socket 2),
requests served concurrently and answered out of order, reports never answered, `async def`
functions, `connect`-mode (listening) handlers behind the real daemon, and login requests."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from bester import wire
from support import DEADLINE, HERE, Broker, eventually, handler_command, package_path


class FakeBroker:
    """Listens where a handler connects (a Unix socket in a temporary directory), as besterd
    does, so a test can send exactly the bytes it means to."""

    def __init__(self, script, *args, env=None):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "h.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.server.settimeout(DEADLINE)
        e = dict(os.environ, BESTER_SOCKET=self.path, BESTER_TYPE="app", PYTHONPATH=package_path(), **(env or {}))
        self.proc = subprocess.Popen([sys.executable, str(script), *args], env=e, stderr=subprocess.PIPE)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(DEADLINE)
        self.codec = wire.Codec()
        self.frames = []

    def send(self, *frames):
        self.conn.sendall(b"".join(wire.encode_frame(f) for f in frames))

    def recv(self, n):
        while len(self.frames) < n:
            data = self.conn.recv(65536)
            if not data:
                raise AssertionError("the handler closed the socket")
            self.frames += [wire.loads(b) for b in self.codec.feed(data)]
        out, self.frames = self.frames[:n], self.frames[n:]
        return out

    def wait(self):
        self.conn.close()
        try:
            self.stderr = self.proc.communicate(timeout=DEADLINE)[1]
            return self.proc.returncode
        finally:
            self.server.close()
            self.dir.cleanup()


def request(token, data, type_="app", **header):
    return {"header": {"kind": "request", "request": token, "scope": "client", "from": {"user": "alice", "server": "s"}, **header}, "payload": {"type": type_, "data": data}}


APP = HERE / "app_handler.py"


class Exits(unittest.TestCase):
    def test_eof_exits_0(self):
        b = FakeBroker(APP)
        b.send(request("1", {"x": 1}))
        self.assertEqual(b.recv(1), [{"header": {"status": "ok", "command": "reply", "request": "1"}, "payload": {"type": "app", "data": {"x": 1}}}])
        b.conn.close()
        self.assertEqual(b.wait(), 0)

    def test_eof_with_a_request_in_progress_exits_0(self):
        b = FakeBroker(APP)
        b.send(request("1", {"action": "sleep", "s": 30}))
        b.conn.close()
        self.assertEqual(b.wait(), 0)

    def test_a_frame_over_the_limit_exits_1(self):
        b = FakeBroker(APP)
        b.conn.sendall(b"\xff\xff\xff\xff")
        self.assertEqual(b.wait(), 1)

    def test_no_socket_exits_2_and_an_absent_one_1(self):
        env = {k: v for k, v in os.environ.items() if k != "BESTER_SOCKET"}
        env["PYTHONPATH"] = package_path()
        out = subprocess.run([sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(out.returncode, 2)
        self.assertIn("BESTER_SOCKET is not set", out.stderr)
        env["BESTER_SOCKET"] = "/nonexistent/h.sock"
        out = subprocess.run([sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(out.returncode, 1)


class Serving(unittest.TestCase):
    def test_pipelined_requests_are_served_concurrently_and_reports_unanswered(self):
        b = FakeBroker(APP)
        self.addCleanup(b.wait)
        self.addCleanup(b.conn.close)
        started = time.monotonic()
        # The slow one first: the quick ones must not wait for it.
        b.send(
            request("slow", {"action": "sleep", "s": 1.0}),
            {"header": {"kind": "report", "status": "ok", "id": "p9", "delivered": [], "offline": []}},
            {"header": {"kind": "report", "status": "error", "request": "999"}, "data": {"error": "no", "code": "bad_handler_reply"}},
            *[request(str(n), {"action": "sleep", "s": 0.3, "n": n}) for n in range(10)],
        )
        answers = b.recv(11)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertEqual(answers[-1]["header"]["request"], "slow", "the slow request held up the others")
        self.assertEqual(sorted(a["header"]["request"] for a in answers), sorted(["slow"] + [str(n) for n in range(10)]))

    def test_split_frames_odd_tokens_and_every_answer_shape(self):
        b = FakeBroker(APP)
        self.addCleanup(b.wait)
        self.addCleanup(b.conn.close)
        frames = b"".join(
            wire.encode_frame(f)
            for f in [
                request("é ✓ " + "x" * 100, {"action": "refuse"}),
                request("2", {"action": "bug"}),
                request("3", {"action": "fanout", "users": ["bob"], "text": "hi"}),
                request("4", {"action": "forward", "to": "echo", "data": [1]}),
                request("5", {"action": "whoami"}, via=["x"]),
            ]
        )
        for i in range(len(frames)):
            b.conn.sendall(frames[i : i + 1])
        got = {a["header"]["request"]: a for a in b.recv(5)}
        self.assertEqual(got["é ✓ " + "x" * 100]["payload"]["data"], {"error": 'alice is not in room "r"', "code": "not_in_room"})
        self.assertEqual(got["2"], {"header": {"status": "error", "command": "reply", "request": "2"}, "payload": {"type": "app", "data": {"error": "the app handler failed: ValueError", "code": "internal_error"}}})
        self.assertEqual(got["3"], {"header": {"status": "ok", "command": "sendClients", "commandData": ["bob"], "request": "3"}, "payload": {"type": "app", "data": {"text": "hi"}}})
        self.assertEqual(got["4"], {"header": {"status": "ok", "command": "sendHandler", "commandData": "echo", "request": "4"}, "payload": {"type": "echo", "data": [1]}})
        self.assertEqual(got["5"]["payload"]["data"], {"user": "alice", "server": "s", "info": None, "type": "app"})

    def test_async_functions_run_any_number_at_once(self):
        # One worker thread, or none: async functions do not take a worker while they wait.
        b = FakeBroker(APP, env={"APP_WORKERS": "0"})
        self.addCleanup(b.wait)
        self.addCleanup(b.conn.close)
        started = time.monotonic()
        b.send(*[request(str(n), {"s": 0.5, "n": n}, type_="asyncapp") for n in range(40)])
        answers = b.recv(40)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertEqual(sorted(a["payload"]["data"]["async"]["n"] for a in answers), list(range(40)))

    def test_push_and_its_report(self):
        b = FakeBroker(APP)
        self.addCleanup(b.wait)
        self.addCleanup(b.conn.close)
        b.send(request("1", {"action": "push", "users": ["bob", "zed"], "n": 3}))
        (push,) = b.recv(1)
        self.assertEqual(push, {"header": {"status": "ok", "command": "sendClients", "commandData": ["bob", "zed"], "id": push["header"]["id"]}, "payload": {"type": "news", "data": {"n": 3}}})
        b.send({"header": {"kind": "report", "status": "ok", "id": push["header"]["id"], "delivered": ["bob"], "offline": ["zed"]}})
        (answer,) = b.recv(1)
        self.assertEqual(answer["payload"]["data"], {"delivered": ["bob"], "offline": ["zed"]})


class Logins(unittest.TestCase):
    """``kind:"login"`` requests, as an authentication handler gets them."""

    def login(self, token, auth):
        return {"header": {"kind": "login", "request": token, "from": {"address": "127.0.0.1:5000", "listener": "tcp"}}, "payload": {"type": "bester.login", "data": auth}}

    def test_accepted_and_refused(self):
        b = FakeBroker(HERE.parent / "examples" / "login_handler.py")
        b.send(
            self.login("L1", {"apiKey": "k-3f9a1c"}),
            self.login("L2", {"apiKey": "k-wrong"}),
            self.login("L3", {"token": "x"}),
        )
        got = {a["header"]["request"]: a for a in b.recv(3)}
        self.assertEqual(got["L1"], {"header": {"status": "ok", "command": "reply", "request": "L1"}, "payload": {"type": "bester.login", "data": {"user": "alice", "info": {"plan": "pro"}}}})
        refused = {"header": {"status": "error", "command": "reply", "request": "L2"}, "payload": {"type": "bester.login", "data": {"error": "invalid API key", "code": "auth_failed"}}}
        self.assertEqual(got["L2"], refused)
        self.assertEqual(got["L3"]["payload"]["data"]["code"], "auth_failed")
        self.assertEqual(b.wait(), 0)
        self.assertNotIn(b"k-3f9a1c", b.stderr)
        self.assertNotIn(b"k-wrong", b.stderr)

    def test_a_handler_without_a_login_function_refuses_logins(self):
        b = FakeBroker(APP)
        self.addCleanup(b.wait)
        self.addCleanup(b.conn.close)
        b.send(self.login("L1", {"username": "alice", "password": "pw"}))
        (answer,) = b.recv(1)
        self.assertEqual(answer["payload"], {"type": "bester.login", "data": {"error": "this handler does not serve logins", "code": "auth_failed"}})


def start_listening(path):
    env = dict(os.environ, BESTER_SOCKET=path, BESTER_TYPE="app", PYTHONPATH=package_path())
    return subprocess.Popen([sys.executable, str(APP), "--listen"], env=env, stderr=subprocess.PIPE)


def dial(path, frame):
    """Connect as besterd does in connect mode: one request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        s.connect(path)
        s.sendall(wire.encode_frame(frame))
        codec, got = wire.Codec(), []
        while not got:
            data = s.recv(65536)
            if not data:
                return None
            got = codec.feed(data)
        return wire.loads(got[0])


class ListenMode(unittest.TestCase):
    def test_a_stale_socket_of_ours_is_replaced_and_sigterm_exits_0(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "h.sock")
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)  # bound, never listening: what a killed run leaves
            stale.close()
            proc = start_listening(path)
            try:
                def up():
                    try:
                        return dial(path, request("1", {"n": 1}))
                    except (ConnectionRefusedError, FileNotFoundError):
                        return None

                answer = eventually("the handler to listen", up)
                self.assertEqual(answer["payload"]["data"], {"n": 1})
                proc.terminate()
                self.assertEqual(proc.wait(DEADLINE), 0)
                self.assertFalse(os.path.exists(path), "the socket was not removed at exit")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.stderr.close()

    def test_anything_else_at_the_path_is_left_alone(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "h.sock")
            with open(path, "w") as f:
                f.write("not a socket")
            proc = start_listening(path)
            _, err = proc.communicate(timeout=DEADLINE)
            self.assertEqual(proc.returncode, 1)
            self.assertIn(b"something else is there (not a socket of ours)", err)
            with open(path) as f:
                self.assertEqual(f.read(), "not a socket")
            os.unlink(path)
            os.symlink(os.path.join(d, "elsewhere"), path)
            proc = start_listening(path)
            proc.communicate(timeout=DEADLINE)
            self.assertEqual(proc.returncode, 1)
            self.assertTrue(os.path.islink(path))
            self.assertFalse(os.path.exists(os.path.join(d, "elsewhere")))


class ConnectMode(unittest.TestCase):
    def test_a_listening_handler_behind_the_real_daemon(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "dial.sock")
            tables = f'[handlers.dial]\nconnect = "{path}"\n{handler_command("app_handler.py", "--listen")}\n'
            with Broker("", tables) as b, b.connect("alice") as c:
                answers = [c.send("dial", {"n": n}) for n in range(50)]
                self.assertEqual([f.result(DEADLINE)["data"] for f in answers], [{"n": n} for n in range(50)])
                self.assertEqual(c.request("dial", {"action": "whoami"})["user"], "alice")
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)


if __name__ == "__main__":
    unittest.main()
