"""serve's options: defaults (127.0.0.1), the model's configuration passed on, and each mistake named."""

from __future__ import annotations

import pytest

from rode_lightning.serving.server import parse_serve_arguments
from rode_lightning.user_errors import UserError


def test_defaults_and_the_rest_for_the_model():
    options, rest = parse_serve_arguments(["--config", "configs/demo.yaml", "--port", "8100", "--api_key", "k",
                                           "--model.adapter_path", "run/adapter"])
    assert (options.host, options.port, options.api_key, options.max_batch_size) == ("127.0.0.1", 8100, "k", 8)
    assert rest == ["--config", "configs/demo.yaml", "--model.adapter_path", "run/adapter"]


@pytest.mark.parametrize("arguments, message", [
    (["--port", "80"], "serve --port: 80; expected 1024 to 65535"),
    (["--max_batch_size", "0"], "serve --max_batch_size: 0; expected a number above 0"),
    (["--request_timeout_s", "5", "--batch_timeout", "6"], "serve --batch_timeout: 6.0; expected at least 0 and below"),
    (["--image_folder", "/nonexistent/photos"], "serve --image_folder: /nonexistent/photos is not a folder"),
    (["--max_new_tokens", "0"], "serve --max_new_tokens: 0; expected at least 1"),
])
def test_mistakes_are_named(arguments, message):
    with pytest.raises(UserError, match=message):
        parse_serve_arguments(arguments)


def test_help_lists_the_servers_options(capsys):
    with pytest.raises(SystemExit) as ended:
        parse_serve_arguments(["--help"])
    printed = capsys.readouterr().out
    assert ended.value.code == 0 and "--api_key" in printed and "--image_folder" in printed
    assert "python -m rode_lightning test --help" in printed


def test_a_cluster_adapter_without_its_saved_clusters_is_refused_saying_what_to_do(cli_demo_dir, tmp_path):
    from rode_lightning.cli import build_engine
    from tests.conftest import tiny_cli_args

    with pytest.raises(UserError, match="serve: a cluster-routed adapter .* routes by the instruction clusters saved "
                                        "with it .* train it again"):
        build_engine([*tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--model.adapter.method", "cluster",
                      "--model.adapter.ranks", "[4, 4]"], command="serve")
