"""Azure OpenAI and Azure AI model inference: the OpenAI family with Azure's URLs and auth.

Three URL styles (`api_style`):
- "deployments": {base_url}/openai/deployments/{target.model}/chat/completions?api-version=...
  (the deployment in the path selects the model; `model` in the body is ignored by Azure).
- "v1":          {base_url}/openai/v1/chat/completions, model (= deployment name) in the body,
  no api-version.
- "models":      {base_url}/models/chat/completions?api-version=... -- Azure AI model inference
  (e.g. Mistral Large, Llama on Azure AI Foundry); model in the body, `max_tokens` spelling and the
  narrower parameter set of that API.
Auth: `api-key: <key>` (default) or `Authorization: Bearer <Entra ID token>`; exactly one is sent.

Quirks handled by the shared OpenAI decoder: the first stream chunk has `choices: []` with
`prompt_filter_results` and empty id/model/created (skipped, never taken as the response id);
asynchronous-filter chunks carry only `content_filter_results` and no delta (skipped);
`finish_reason: "content_filter"` maps to IR content_filter; a filtered prompt is HTTP 400 with
`code: "content_filter"` (invalid_request); `DeploymentNotFound` is not_found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec
from msgspec import Struct

from .base import Target
from .common import path_segment
from .openai_backend import COMMON_PARAMS, LOGPROB_PARAMS, OPENAI, PATHS, OpenAIBackend, Preset

# Azure OpenAI (deployments and v1) supports what OpenAI does; `max_completion_tokens` since 2024-09.
AZURE_OPENAI = Preset(name="azure", supported=OPENAI.supported, max_tokens_field="max_completion_tokens")
# Azure AI model inference (`/models`): the common parameters, `max_tokens`, no logit_bias / n.
AZURE_MODELS = Preset(
    name="azure-models",
    supported=(COMMON_PARAMS - {"parallel_tool_calls", "user"}) | (LOGPROB_PARAMS - {"logit_bias"}),
)

DEFAULT_API_VERSION = "2024-10-21"  # latest GA data-plane version of Azure OpenAI
DEFAULT_MODELS_API_VERSION = "2024-05-01-preview"  # the Azure AI model inference API version


class AzureOptions(Struct, forbid_unknown_fields=True, frozen=True):
    api_version: str | None = None  # default per api_style (see the two constants above)
    auth: Literal["api-key", "bearer"] = "api-key"
    api_style: Literal["deployments", "v1", "models"] = "deployments"


class AzureBackend(OpenAIBackend):
    provider: ClassVar[str] = "azure"
    family: ClassVar[str | None] = "openai"
    Options: ClassVar[type[msgspec.Struct]] = AzureOptions
    supported_params: ClassVar[frozenset[str]] = AZURE_OPENAI.supported

    def __init__(self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: Any) -> None:
        super().__init__(base_url, api_key, headers, options)
        style = options.api_style
        self.api_version = options.api_version or (
            DEFAULT_MODELS_API_VERSION if style == "models" else DEFAULT_API_VERSION
        )

    def _select_preset(self, name: str | None) -> Preset:
        return AZURE_MODELS if self.options.api_style == "models" else AZURE_OPENAI

    def _url(self, op: str, target: Target) -> str:
        style = self.options.api_style
        if style == "v1":
            return f"{self.base_url}/openai/v1{PATHS[op]}"
        if style == "models":
            return f"{self.base_url}/models{PATHS[op]}?api-version={self.api_version}"
        deployment = path_segment(target.model)
        return f"{self.base_url}/openai/deployments/{deployment}{PATHS[op]}?api-version={self.api_version}"

    def _auth_headers(self) -> dict[str, str]:
        if self.options.auth == "bearer":
            return super()._auth_headers()
        return {"api-key": self.api_key} if self.api_key else {}
