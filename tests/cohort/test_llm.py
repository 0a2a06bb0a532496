"""The optional LLM backend against a real HTTP server speaking the OpenAI chat-completions shape
(started here on a free loopback port): the request it sends, and how answers are validated."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dicomlake import cohort
from dicomlake.cohort.llm import ChatCompletionsBackend, LlmError
from tests.cohort.demo_lake import AS_OF, DemoLake


class ChatServer:
    """Answers POST /v1/chat/completions with the next queued message content; records requests."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                reply = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": server.answers.pop(0)},
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_a_question_the_parser_cannot_read_goes_to_the_model(demo: DemoLake, chat: ChatServer) -> None:
    chat.answers.append(
        json.dumps(
            {"patients": {"age": {"min": 80}, "sex": ["male"]}, "return": {"studies": {"modalities": ["CT"]}}}
        )
    )
    backend = ChatCompletionsBackend(url=chat.url, model="local-test", api_key="sk-test")
    result = cohort.run(demo.tenant, "CT studies of the octogenarian gentlemen", as_of=AS_OF, llm=backend)
    (request,) = chat.requests
    assert request["auth"] == "Bearer sk-test" and request["body"]["model"] == "local-test"
    roles = [m["role"] for m in request["body"]["messages"]]
    assert roles == ["system", "user"] and request["body"]["messages"][1]["content"].startswith("CT studies")
    assert "conditions:" in request["body"]["messages"][0]["content"]  # the definition format is sent
    assert result.unrecognized == [] and "octogenarian" in result.understood[0]
    assert result.patients == ["DL-000003", "DL-000007", "DL-000008"]  # men of 84, 88, 82
    planned = sorted(
        s.study_instance_uid
        for s in demo.studies
        if s.modality == "CT" and s.patient.patient_id in ("DL-000007", "DL-000008")
    )
    assert result.studies == planned


def test_a_question_the_parser_reads_never_calls_the_model(demo: DemoLake, chat: ChatServer) -> None:
    backend = ChatCompletionsBackend(url=chat.url)
    result = cohort.run(demo.tenant, "men over 80", as_of=AS_OF, llm=backend)
    assert chat.requests == [] and result.patients == ["DL-000003", "DL-000007", "DL-000008"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("the patients you want are the old ones", "not JSON"),
        (json.dumps({"patients": {"age": {"min": "eighty"}}}), "patients.age.min"),
        ("```json\n" + json.dumps({"patients": {"sex": ["martian"]}}) + "\n```", "patients.sex[0]"),
    ],
)
def test_invalid_answers_are_refused_with_the_reason(
    demo: DemoLake, chat: ChatServer, answer: str, message: str
) -> None:
    chat.answers.append(answer)
    with pytest.raises(LlmError, match=message.replace("[", r"\[")):
        cohort.run(demo.tenant, "the octogenarians", as_of=AS_OF, llm=ChatCompletionsBackend(url=chat.url))


def test_an_unreachable_endpoint_is_a_clear_error(demo: DemoLake, chat: ChatServer) -> None:
    url = chat.url.replace("/v1/chat/completions", "/elsewhere")
    with pytest.raises(LlmError, match="failed"):
        cohort.run(demo.tenant, "the octogenarians", as_of=AS_OF, llm=ChatCompletionsBackend(url=url))
