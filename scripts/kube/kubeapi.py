"""A minimal Kubernetes API client over `requests`, for the local test cluster only.

Used by scripts/kube/cluster-addons.py (the stand-ins for a CSI provisioner and an ingress
controller) and by tests/integration/test_deploy.py. It reads the kubeconfig that
scripts/kube-up.sh writes (client certificate authentication), and only ever talks to the
server named there, which kube-up.sh binds to loopback.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import yaml

FIELD_MANAGER = "onboarding-test-cluster"


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, response: requests.Response) -> None:
        self.status = response.status_code
        try:
            self.body: dict[str, Any] = response.json()
        except ValueError:
            self.body = {"message": response.text}
        super().__init__(f"{method} {path}: {self.status} {self.body.get('message', '')}")


class KubeAPI:
    def __init__(self, kubeconfig: str | Path, timeout: float = 30.0) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        self.server = cluster["server"].rstrip("/")
        self.timeout = timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="kubeapi-")
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy: the server is on loopback
        self.session.verify = self._file(cluster, "certificate-authority") or not cluster.get(
            "insecure-skip-tls-verify", False
        )
        cert, key = self._file(user, "client-certificate"), self._file(user, "client-key")
        if cert and key:
            self.session.cert = (cert, key)
        if user.get("token"):
            self.session.headers["Authorization"] = f"Bearer {user['token']}"

    def _file(self, entry: dict[str, Any], key: str) -> str | None:
        if entry.get(key):
            return str(entry[key])
        data = entry.get(f"{key}-data")
        if not data:
            return None
        path = Path(self._tmp.name) / key
        path.write_bytes(base64.b64decode(data))
        return str(path)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        response = self.session.request(
            method,
            url,
            data=data,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=self.timeout,
        )
        if response.status_code in ok:
            return {}
        if response.status_code >= 400:
            raise ApiError(method, path, response)
        if not response.content:
            return {}
        if not response.headers.get("Content-Type", "").startswith("application/json"):
            return {"text": response.text}  # /readyz, /version on some servers
        result: dict[str, Any] = response.json()
        return result

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path, ok=(404,)) or None

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(path, **params).get("items", [])
        return items

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body, params={"fieldManager": FIELD_MANAGER})

    def apply(self, path: str, body: dict[str, Any], force: bool = True) -> dict[str, Any]:
        """Server-side apply of one object (path names the object itself)."""
        params = {"fieldManager": FIELD_MANAGER}
        if force:
            params["force"] = "true"
        return self.request(
            "PATCH", path, body, content_type="application/apply-patch+yaml", params=params
        )

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path, ok=(404,))
