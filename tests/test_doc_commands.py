"""Every command line that README.md and docs/*.md show is checked here, so a stale
example fails CI.

* ``tagnn-pyg ...`` commands are executed in page order, in one scratch folder per
  page that holds the data the pages name: ``train-item-views.csv`` is the shared
  DIGINETICA sample, ``data/...`` is what the page's own ``prepare`` wrote,
  ``synthetic`` is generated, ``../shared/datasets`` is the real data. Commands
  that need data nobody ships (the full YOOCHOOSE log, a shop's CSV) or hours of
  training are listed in ``PARSE_ONLY`` with the reason and are only parsed.
* Usage synopses (``DATA``, ``[options]``, ``{a,b}``) must name only options the
  command has.
* ``torchrun [torchrun options] -m tagnn_pyg ARGS``: the torchrun options must parse
  with torchrun's own parser and ``ARGS`` as a ``tagnn-pyg`` command; those that are
  not parse-only are run in page order like the others, as ``python -m
  torch.distributed.run ...`` in a subprocess.
* ``python benchmarks/X.py ...`` / ``python examples/X.py ...``: each flag must be
  in the script's ``--help``; ``make X``: the target must exist; ``pip install
  'tagnn-pyg[extra]'``: the extra must exist.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tagnn_pyg.cli import build_parser, main

from conftest import REPO, require_shared

PAGES = ['README.md'] + sorted(str(p.relative_to(REPO)) for p in (REPO / 'docs').glob('*.md'))

#: Commands that are parsed but not run, with the reason (the test fails if one of
#: these no longer appears in the docs, so the list cannot go stale).
PARSE_ONLY: Dict[str, str] = {
    'tagnn-pyg prepare yoochoose yoochoose-clicks.dat':
        'needs the full YOOCHOOSE log (33M clicks), which is not shipped',
    'tagnn-pyg prepare csv clicks.csv': "a shop's own CSV, not shipped",
    'tagnn-pyg train --data ../shared/datasets/diginetica':
        'one epoch on the full data takes 45 minutes on two cores',
    'tagnn-pyg baseline --data diginetica --root ../shared/datasets':
        'the full-data baseline is benchmarks/baselines.py; run here it takes minutes',
    'torchrun --nnodes 2': 'needs two machines',
    'torchrun --standalone --nproc_per_node 2 -m tagnn_pyg train --data synthetic '
    '--out runs/ddp --resume':
        'resuming under torchrun is run (after a killed process) by test_distributed.py',
}
_PLACEHOLDER = re.compile(r'\[|\{|\.\.\.|\b(DATA|CKPT|RUN_DIR|NAME|RAW_FILE|OUT_DIR|FILE|N)\b')


def _code_lines(page: str) -> List[str]:
    """The command lines of a page's fenced code blocks (continuations joined,
    prompts and trailing comments removed)."""
    text = (REPO / page).read_text(encoding='utf-8')
    out = []
    for body in re.findall(r'```[a-z]*\n(.*?)```', text, re.S):
        body = re.sub(r'\\\n\s*', ' ', body)
        for line in body.splitlines():
            line = line.strip()
            if line.startswith('$ '):
                line = line[2:]
            line = ' '.join(re.split(r'\s+#\s', line)[0].split())
            line = re.sub(r'^nice -n \d+ ', '', line)
            if re.match(r'(tagnn-pyg |torchrun |python |make |pip install |benchmarks/\S+\.sh )',
                        line):
                out.append(line)
    return out


def _all_lines() -> List[Tuple[str, str]]:
    return [(page, line) for page in PAGES for line in _code_lines(page)]


def _is_synopsis(line: str) -> bool:
    return bool(_PLACEHOLDER.search(line))


def _parse_only(line: str) -> bool:
    return any(line.startswith(prefix) for prefix in PARSE_ONLY)


def _torchrun(line: str):
    """(torchrun's parsed options, the tagnn-pyg argv) of a ``torchrun ... -m
    tagnn_pyg ARGS`` line."""
    from torch.distributed.run import get_args_parser

    argv = shlex.split(line)[1:]
    try:
        opts = get_args_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"{line!r}: torchrun does not accept its options (exit {err.code})")
    assert opts.module and opts.training_script == 'tagnn_pyg', \
        f"{line!r}: torchrun must start the command as '-m tagnn_pyg ARGS'"
    return opts, list(opts.training_script_args)


def _command_argv(line: str) -> List[str]:
    """The tagnn-pyg arguments of a ``tagnn-pyg ...`` or ``torchrun ... -m
    tagnn_pyg ...`` line."""
    return _torchrun(line)[1] if line.startswith('torchrun ') else shlex.split(line)[1:]


def _is_command(line: str) -> bool:
    return line.startswith(('tagnn-pyg ', 'torchrun '))


def test_pages_have_commands():
    lines = _all_lines()
    assert sum(line.startswith('tagnn-pyg ') for _, line in lines) > 20
    assert any(line.startswith('torchrun ') for _, line in lines)
    for prefix in PARSE_ONLY:
        assert any(line.startswith(prefix) for _, line in lines), \
            f"PARSE_ONLY entry {prefix!r} is no longer in the docs: remove it"


def _subparser(command: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == 'command')
    return sub.choices[command]


@pytest.mark.parametrize('page, line', [pl for pl in _all_lines() if _is_command(pl[1])])
def test_command_parses(page, line):
    argv = _command_argv(line)
    if _is_synopsis(line):
        command = next((a for a in argv if re.fullmatch(r'[a-z]+', a)), None)
        flags = {a for a in re.findall(r'(?<![\w-])(--?[a-z][\w-]*)', line)}
        if command is None:
            known = set(build_parser()._option_string_actions)
        else:
            known = set(_subparser(command)._option_string_actions)
        assert flags <= known, f"{page}: {line!r} names unknown options {flags - known}"
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"{page}: {line!r} does not parse (exit {err.code})")


def _script_help(script: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / script), '--help'],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, f"{script} --help failed: {out.stderr[-2000:]}"
    return out.stdout


@pytest.mark.parametrize('page, line', [pl for pl in _all_lines()
                                        if pl[1].startswith('python ')])
def test_script_flags_exist(page, line):
    argv = shlex.split(line)
    script = argv[1]
    assert (REPO / script).exists(), f"{page}: {script} does not exist"
    help_text = _script_help(script)
    for flag in (a for a in argv[2:] if a.startswith('--')):
        assert re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', help_text), \
            f"{page}: {script} has no option {flag}"


def test_make_targets_extras_and_scripts_exist():
    makefile = (REPO / 'Makefile').read_text()
    setup = (REPO / 'setup.py').read_text()
    for page, line in _all_lines():
        argv = shlex.split(line)
        if argv[0].endswith('.sh'):
            script = REPO / argv[0]
            assert script.exists() and os.access(script, os.X_OK), \
                f"{page}: {argv[0]} is missing or not executable"
        if argv[0] == 'make':
            for target in argv[1:]:
                assert re.search(rf'^{re.escape(target)}:', makefile, re.M), \
                    f"{page}: no make target {target!r}"
        if argv[:2] == ['pip', 'install']:
            for spec in argv[2:]:
                extras = re.match(r'tagnn-pyg\[([\w,]+)\]', spec)
                for extra in (extras.group(1).split(',') if extras else []):
                    assert f"'{extra}':" in setup, f"{page}: no extra {extra!r}"


# -------------------------------------------------------------- execution


def _scratch(tmp_path: Path) -> Path:
    sample = require_shared('raw', 'diginetica-sample-train-item-views.csv')
    shutil.copy(sample, tmp_path / 'train-item-views.csv')
    return tmp_path


RUNNABLE = [p for p in PAGES if any(_is_command(line) and
                                    not _is_synopsis(line) and not _parse_only(line)
                                    for line in _code_lines(p))]


def _run_torchrun(line: str, argv: List[str], cwd: Path) -> Tuple[int, str]:
    """Run a torchrun line (its tagnn-pyg part replaced by ``argv``) in ``cwd``."""
    words = shlex.split(line)[1:]
    launcher = words[:len(words) - len(_torchrun(line)[1])]
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'TAGNN_PYG_DIST_TIMEOUT': '60'}
    out = subprocess.run([sys.executable, '-m', 'torch.distributed.run', *launcher,
                          *argv], capture_output=True, text=True, timeout=300, cwd=cwd,
                         env=env)
    return out.returncode, out.stderr


@pytest.mark.parametrize('page', RUNNABLE)
def test_page_commands_run(page, tmp_path, monkeypatch, capsys):
    """Each page's commands, in order, in a scratch folder: they all succeed (or,
    where the page shows the error a command prints, print that error)."""
    work = _scratch(tmp_path)
    shared = REPO.parent / 'shared'
    if shared.exists():
        (tmp_path.parent / 'shared').exists() or os.symlink(shared, tmp_path.parent / 'shared')
    monkeypatch.chdir(work)
    text = (REPO / page).read_text(encoding='utf-8')
    for line in _code_lines(page):
        if not _is_command(line) or _is_synopsis(line) or _parse_only(line):
            continue
        argv = _command_argv(line)
        if argv[0] in ('train', 'demo'):
            argv += ['--no-progress', '--threads', '1']
        capsys.readouterr()
        if line.startswith('torchrun '):
            code, err = _run_torchrun(line, argv, work)
        else:
            code = main(argv)
            err = capsys.readouterr().err
        shown = re.search(re.escape(line) + r'\n(tagnn-pyg: error: [^\n]*)', text)
        if shown:
            assert code == 1 and shown.group(1) in err, (page, line, err[-1000:])
        else:
            assert code == 0, f"{page}: {line!r} failed with {code}: {err[-2000:]}"
