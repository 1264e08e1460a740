import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from resources.alerts import Alert, AlertError, LogAlerts, WebhookAlerts

ALERT = Alert(
    title="check drift failed", text="57% of features drifted", link="/runs/abc", details={"day": 1}
)


@pytest.fixture
def webhook():
    """A webhook on loopback that records what it receives and answers with ``status``."""
    received, status = [], {"code": 200}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, status
    server.shutdown()


def test_a_webhook_alert_is_posted_as_json_with_slack_text_and_the_fields(webhook):
    url, received, _ = webhook
    WebhookAlerts(url=url).send(ALERT)
    (body,) = received
    assert body["text"].startswith("[keel error] check drift failed\n57% of features drifted")
    assert body["title"] == ALERT.title and body["details"] == {"day": 1} and body["link"] == "/runs/abc"


def test_a_webhook_that_refuses_makes_the_send_fail_by_name(webhook):
    url, _, status = webhook
    status["code"] = 500
    with pytest.raises(AlertError, match="check drift failed"):
        WebhookAlerts(url=url).send(ALERT)


def test_an_unreachable_webhook_makes_the_send_fail():
    with pytest.raises(AlertError, match="not delivered"):
        WebhookAlerts(url="http://127.0.0.1:9/hook", timeout_seconds=2).send(ALERT)


def test_local_alerts_are_log_lines_at_their_severity(caplog):
    with caplog.at_level(logging.WARNING, logger="keel.alerts"):
        LogAlerts().send(ALERT)
        LogAlerts().send(Alert(title="freshness", text="late", severity="warning"))
    assert [(r.levelno, r.getMessage().splitlines()[0]) for r in caplog.records] == [
        (logging.ERROR, "[keel error] check drift failed"),
        (logging.WARNING, "[keel warning] freshness"),
    ]
