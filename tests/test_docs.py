"""The docs say what the code does: the config reference is the generator's output, every `ftft`
command in a shell block parses, every example file named exists and loads, every relative link
resolves."""

import dataclasses
import re
import shlex

import pytest
import yaml

from ftft_ds.cli.config_reference import field_docstrings, reference_markdown, sections

from .helpers import REPO, in_process

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_config_reference_is_what_the_generator_writes():
    page = (REPO / "docs" / "config.md").read_text()
    assert page == reference_markdown(), "docs/config.md is stale: run `ftft config-reference > docs/config.md`"


def test_every_config_field_has_a_docstring():
    """A field without one would be a blank row of the reference."""
    missing = [
        f"{cls.__name__}.{field.name}"
        for _, cls in sections()
        for field in dataclasses.fields(cls)
        if field.init and field.name not in field_docstrings(cls)
    ]
    assert missing == []


def shell_blocks(page):
    return re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)


def ftft_commands():
    """(page, command line) for every `ftft ...` line of a shell block, continuation lines joined."""
    found = []
    for page in PAGES:
        for block in shell_blocks(page):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("ftft ") and not line.startswith("ftft_"):
                    found.append((page.name, line))
    return found


@pytest.mark.parametrize("page, line", ftft_commands())
def test_every_ftft_command_in_the_docs_parses(page, line):
    """By click's own parser, in this process: the command exists, and every option and argument
    it is given is one it takes (values are not checked: the files they name are the reader's)."""
    import click

    from ftft_ds.cli import _register, cli

    _register()
    words = shlex.split(line)[1:]
    command = cli.get_command(click.Context(cli), words[0])
    assert command is not None, f"{page}: no command {words[0]!r} in {line!r}"
    context = click.Context(command, info_name=words[0])
    _, extra, _ = command.make_parser(context).parse_args(words[1:])
    assert extra == [], f"{page}: {line!r} has arguments {words[0]} does not take: {extra}"


def test_a_recipe_the_docs_run_on_the_embedded_task_plans_its_cost():
    """`ftft run examples/recipe.yaml --dry-run`, as the docs give it: the plan, and nothing trained."""
    assert any(line.startswith("ftft run examples/recipe.yaml") for _, line in ftft_commands())
    result = in_process(["run", REPO / "examples" / "recipe.yaml", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cost plan (cost_target 0.5" in result.output


def example_files():
    named = set()
    for page in PAGES:
        named.update(re.findall(r"\bexamples/[\w./-]+\.(?:yaml|py|sbatch)\b|\bexamples/hostfile\b", page.read_text()))
    return sorted(named)


@pytest.mark.parametrize("path", example_files())
def test_every_example_file_the_docs_name_exists_and_loads(path):
    file = REPO / path
    assert file.is_file(), path
    if file.suffix == ".yaml":
        assert isinstance(yaml.safe_load(file.read_text()), dict)
    elif file.suffix == ".py":
        compile(file.read_text(), str(file), "exec")


def anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(
        r"^#+ (.+)$", "\n".join(re.sub(r"```.*?```", "", page.read_text(), flags=re.S).splitlines()), re.M
    )
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
                broken.append(f"{page.name}: {target}")
    assert broken == []
