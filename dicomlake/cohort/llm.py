"""An optional LLM backend: an OpenAI-compatible chat-completions endpoint translates a question the
parser could not fully read into the same cohort definition JSON, validated like any other.

Off by default. Turn it on with `--llm-url` or $DICOMLAKE_LLM_URL (the full chat-completions URL,
e.g. http://127.0.0.1:8000/v1/chat/completions); $DICOMLAKE_LLM_API_KEY is sent as a bearer token.
The question, the tenant's condition wording and the definition format are sent; no patient data.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from dicomlake.cohort.definition import CohortDefinitionError, parse_definition
from dicomlake.cohort.definition import __doc__ as DEFINITION_FORMAT
from dicomlake.cohort.vocabulary import ClinicalTerms

MAX_TERMS = 200


class LlmError(RuntimeError):
    """The endpoint failed or answered something that is not a valid cohort definition."""


@dataclass(frozen=True)
class ChatCompletionsBackend:
    url: str
    model: str = "gpt-4o-mini"
    api_key: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, url: str | None = None, model: str | None = None) -> ChatCompletionsBackend | None:
        url = url or os.environ.get("DICOMLAKE_LLM_URL")
        if not url:
            return None
        return cls(
            url=url,
            model=model or os.environ.get("DICOMLAKE_LLM_MODEL", "gpt-4o-mini"),
            api_key=os.environ.get("DICOMLAKE_LLM_API_KEY") or None,
        )

    def messages(self, question: str, terms: ClinicalTerms) -> list[dict[str, str]]:
        vocabulary = sorted(terms.condition_texts)[:MAX_TERMS]
        system = (
            "You translate questions about a patient cohort into ONE JSON object, a cohort definition in "
            "exactly this format (YAML shown; answer in JSON, no prose):\n"
            + (DEFINITION_FORMAT or "")
            + "\nCondition wording present in the data: "
            + json.dumps(vocabulary)
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": 0,
                "response_format": {"type": "json_object"},
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise LlmError(f"chat completions at {self.url} failed: {exc}") from exc
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LlmError(
                f"chat completions at {self.url}: no choices[0].message.content in the answer"
            ) from exc

    def translate(self, question: str, terms: ClinicalTerms, parsed: Any) -> Any:
        """A ParsedQuestion from the model's definition; the parser's reading stays in `understood`."""
        from dicomlake.cohort.question import ParsedQuestion

        content = self.complete(self.messages(question, terms)).strip()
        if content.startswith("```"):  # a fenced block despite the instructions
            content = content.strip("`").removeprefix("json").strip()
        try:
            definition = parse_definition(json.loads(content))
        except json.JSONDecodeError as exc:
            raise LlmError(f"the model's answer is not JSON: {exc}") from exc
        except CohortDefinitionError as exc:
            raise LlmError(f"the model's definition is invalid: {exc}") from exc
        understood = [
            f"translated by {self.model} at {self.url} (the parser left {parsed.unrecognized} unread)"
        ]
        return ParsedQuestion(definition, understood, [], backend="llm")
