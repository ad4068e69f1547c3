from orchestrator.clients.llm import Sampling


def test_the_repeat_penalty_is_sent_only_when_on() -> None:
    assert Sampling(64).as_dict() == {"max_tokens": 64, "temperature": 0.0}
    on = Sampling(64, stop=("\n\n",), repeat_penalty=1.1).as_dict()
    assert on == {"max_tokens": 64, "temperature": 0.0, "stop": ["\n\n"], "repeat_penalty": 1.1}


def test_the_triton_llm_model_accepts_it() -> None:
    import ast
    from pathlib import Path

    source = Path("model_repository/backend/llm.py").read_text()
    keys = next(
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "SAMPLING_KEYS" for t in node.targets)
    )
    assert "repeat_penalty" in ast.literal_eval(keys)
