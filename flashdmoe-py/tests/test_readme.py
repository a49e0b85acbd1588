"""The README's "Use it from PyTorch" example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_sample():
    text = README.read_text()
    block = re.search(r"<!-- python-sample: begin.*?-->\n(.*?)<!-- python-sample: end -->", text,
                      re.S)
    assert block, "README.md has no python-sample block"
    code = re.fullmatch(r"```python\n(.*)```\n", block.group(1), re.S)
    assert code, "the python-sample block is not one ```python fence"
    return text, code.group(1)


def test_the_readme_example_runs():
    text, code = readme_sample()
    assert "pip install ./flashdmoe-py" in text
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, str(README), "exec"), {})
