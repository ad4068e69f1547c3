import pytest

from orchestrator.api.app import check_bind
from orchestrator.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_binds_without_keys(host: str) -> None:
    check_bind(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.org"])
def test_other_addresses_need_api_keys(host: str) -> None:
    with pytest.raises(SystemExit, match="TRITONRAG_API_KEYS"):
        check_bind(Settings(host=host))
    check_bind(Settings(host=host, api_keys={"secret": "team-a"}))


def test_api_keys_come_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONRAG_API_KEYS", '{"k1": "alpha", "k2": "beta"}')
    assert Settings().api_keys == {"k1": "alpha", "k2": "beta"}


def test_the_upload_body_is_in_the_openapi_document() -> None:
    from orchestrator.api.app import create_app

    spec = create_app(Settings()).openapi()
    body = spec["paths"]["/v1/collections/{collection}/documents"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["files"]
    assert schema["properties"]["files"]["items"]["format"] == "binary"
