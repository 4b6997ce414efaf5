"""The README's example runs as written."""

import re
from pathlib import Path


def test_readme_example_runs():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Example\n\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})


def test_trainer_snippets_are_python_and_each_trainer_has_one():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## In the trainers people use", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### (.+)$", section, re.M)
    assert headings == ["Hugging Face `transformers.Trainer`", "PyTorch Lightning", "Hugging Face Accelerate"]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) == 3
    for snippet in snippets:
        compile(snippet, "README.md", "exec")
