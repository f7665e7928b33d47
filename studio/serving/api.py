"""The OpenAI-compatible API's requests and errors: what a client may send, checked by pydantic, and every refusal
in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``) so existing clients raise their usual
exceptions with a message for people.

Fields past OpenAI's own are extensions a client passes through ``extra_body`` (``seed`` on images and speech,
``top_k``, ``steps``...). Unknown fields are ignored, as OpenAI clients send fields this server has no use for."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from studio.fields import describe

MAX_SEED = 2**32 - 1
MAX_CHOICES = 16


class ApiError(Exception):
    """A request refused: ``status`` (HTTP), and OpenAI's ``type``/``param``/``code`` beside the message."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def new_id(prefix: str) -> str:
    """A response id as OpenAI's look (``chatcmpl-...``): what feedback later names."""
    return f"{prefix}-{secrets.token_hex(12)}"


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)


def parse(model: type[Request], data) -> Request:
    """``data`` as ``model``, or a 400 naming the first bad field (``messages.0.role``) in people's words."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, describe(error, model), param=param) from None


class TextRequest(Request):
    """What completions and chat share: the sampling settings, each choice's seed, stop strings, streaming."""
    max_tokens: int | None = Field(None, ge=1, le=4096, description="most tokens generated per choice")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict | None = None
    top_k: int = Field(0, ge=0, le=10_000)  # extension, as the Generate tab's
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)  # extension

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("give up to 4 stop strings, none empty")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(TextRequest):
    prompt: str | list[str] = Field(description="the text to continue, or a list of them")

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts or len(prompts) > MAX_CHOICES:
            raise ValueError(f"give 1 to {MAX_CHOICES} prompts")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = Field(description="only text parts are served")
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(TextRequest):
    messages: list[Message] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096, description="the newer name of max_tokens")

    def turns(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def last_user_turn(self) -> str:
        return next((m.text() for m in reversed(self.messages) if m.role == "user"), self.messages[-1].text())


class ImageRequest(Request):
    prompt: str = Field(min_length=1, max_length=4000)
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, pattern=r"^(auto|\d{1,4}x\d{1,4})$", description="WIDTHxHEIGHT, e.g. 64x64")
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # extension
    steps: int | None = Field(None, ge=1, le=500)  # extension
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0)  # extension
    negative_prompt: str = ""  # extension

    def width_height(self) -> tuple[int, int]:
        """(0, 0) for the model's own size."""
        if self.size in (None, "auto"):
            return 0, 0
        width, height = self.size.split("x")
        return int(width), int(height)


class SpeechRequest(Request):
    input: str = Field(min_length=1, max_length=4096, description="the prompt: what the sound should be")
    voice: str | None = None  # OpenAI's; these models have none
    response_format: str = "wav"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # extension
    seconds: float | None = Field(None, gt=0.0, le=60.0)  # extension: the clip's length
    steps: int | None = Field(None, ge=1, le=500)  # extension


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64, description="the id of the response rated")
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=4000)
