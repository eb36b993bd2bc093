"""A small client of the Prometheus HTTP API: raw samples of a selector over a period.

Raw samples, not a range query's resampled steps: an instant query of `selector[Ns]`
returns every stored sample with its own timestamp, which is what "to the second" needs.
Long periods are read in chunks (a day by default) to keep each answer small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

LabelKey = tuple[tuple[str, str], ...]


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or refused the question."""


class PrometheusUnreachable(PrometheusError):
    pass


@dataclass
class PrometheusClient:
    url: str
    timeout_seconds: float = 30.0
    retries: int = 3
    bearer_token: str | None = None
    chunk_seconds: int = 86_400
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise PrometheusError(
                f"Prometheus URL '{self.url}' must start with http:// or https://"
            )
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            backoff_factor=0.5,
            status_forcelist=(429, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if self.bearer_token:
            self.session.headers["Authorization"] = f"Bearer {self.bearer_token}"

    def _call(self, path: str, form: Mapping[str, str]) -> Any:
        endpoint = f"{self.url}{path}"
        try:
            response = self.session.post(
                endpoint, data=dict(form), timeout=(5.0, self.timeout_seconds)
            )
        except requests.exceptions.ConnectionError as exc:
            raise PrometheusUnreachable(
                f"cannot reach Prometheus at {self.url} ({type(exc).__name__}); is the URL right "
                f"and the port-forward running?"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise PrometheusUnreachable(
                f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s"
            ) from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(
                f"{endpoint} answered HTTP {response.status_code} without JSON: "
                f"{response.text[:200]!r} (is this a Prometheus URL?)"
            ) from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"{endpoint} answered HTTP {response.status_code}: "
                f"{body.get('errorType', '')} {body.get('error', '')}".strip()
            )
        return body["data"]

    def build_info(self) -> dict[str, str]:
        """Prometheus' version (also a cheap check that the URL is a Prometheus)."""
        try:
            response = self.session.get(
                f"{self.url}/api/v1/status/buildinfo", timeout=(5.0, self.timeout_seconds)
            )
        except requests.exceptions.RequestException as exc:
            raise PrometheusUnreachable(
                f"cannot reach Prometheus at {self.url} ({type(exc).__name__})"
            ) from exc
        if response.status_code != 200:
            raise PrometheusError(
                f"{self.url}/api/v1/status/buildinfo answered HTTP {response.status_code} "
                f"(is this a Prometheus URL?)"
            )
        data: dict[str, str] = response.json().get("data", {})
        return data

    def samples(
        self, selector: str, start_ms: int, end_ms: int, *, step_seconds: int | None = None
    ) -> dict[LabelKey, list[tuple[int, float]]]:
        """Every stored sample of `selector` in [start_ms, end_ms], per series, by time; with
        `step_seconds`, `selector` is any expression, evaluated every step (a subquery, at
        multiples of the step since the epoch) as a rule evaluating it would.

        NaN samples (and Prometheus' staleness markers, which the API never returns) are
        dropped: they are absence of data, not a value."""
        found: dict[LabelKey, dict[int, float]] = {}
        chunk_ms = self.chunk_seconds * 1000
        chunk_end = end_ms
        while chunk_end > start_ms:
            span_ms = min(chunk_ms, chunk_end - start_ms)
            query = (
                f"({selector})[{span_ms}ms:{step_seconds}s]"
                if step_seconds
                else f"{selector}[{span_ms}ms]"
            )
            data = self._call("/api/v1/query", {"query": query, "time": f"{chunk_end / 1000:.3f}"})
            if data.get("resultType") != "matrix":
                raise PrometheusError(
                    f"expected a matrix for {selector}, got {data.get('resultType')}"
                )
            for series in data["result"]:
                key = tuple(sorted(series["metric"].items()))
                bucket = found.setdefault(key, {})
                for at, raw in series.get("values", []):
                    value = float(raw)
                    at_ms = round(float(at) * 1000)
                    if not math.isnan(value) and start_ms <= at_ms <= end_ms:
                        bucket[at_ms] = value
            chunk_end -= span_ms
        return {key: sorted(values.items()) for key, values in found.items() if values}
