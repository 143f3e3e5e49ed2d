"""Mutation testing of the state machine: does the suite notice when the code is wrong?

``make mutants`` (``python -m tests.mutants``) applies each mutant of the catalogue
(``tests/mutants/catalogue.py``), one at a time, to a scratch copy of the repository, runs a fast
behavioural subset of the tests against it, and prints whether the tests failed (*killed*: the
change was noticed) or passed (*survived*: a bug of that shape would ship). A mutant is one
textual change: a file, the exact text it replaces (found exactly once, or the run fails
loudly, so the catalogue cannot rot silently), the new text, a name and what it breaks.

- Lua mutants (``lua/``) cover every write and every check of every script: token and lease
  checks, attempt counting, due times, wakes, expiries, cleanups, order, replies. A mutant of
  ``lua/includes/`` is refilled into every script that carries the include (``make lua``).
- Core mutants (``pyqcore/core/``) cover the flows: batch sizing, the heartbeat's age rule,
  releasing unstarted jobs on stop, retry and bury decisions, partition walking, dead-letter
  paging.

The scratch copies live in ``build/mutants/slot-<n>/``: ``src`` (the working tree's files, as
``git ls-files`` lists them, tracked and untracked) and ``venv``, built once with
``python -m venv`` and ``pip install -e 'src[test]'`` (rebuilt when pyproject.toml, setup.py or
the codec's source change), so the mutated files are the ones imported and loaded
(``pyqcore.scripts`` reads ``lua/`` through importlib.resources from that install). Slots run
mutants in parallel (``--jobs``, default: up to 2). The tests run on the single-server backend
(``tests/mutants/plugin.py`` drops the cluster parametrizations) and on both drivers where a
test is parametrized over them; a mutant's own ``tests`` run first, so most kills are quick
(``pytest -x``). Before any mutant, the unmutated copy must pass the subset: a failing baseline
would make every mutant look killed.

Results go to ``build/mutants/results.txt`` and ``results.json``: per mutant killed /
survived / timeout (a hang counts as killed: the change was noticed) and the kill rates of the
Lua and the core mutants, with equivalent mutants left out of the denominator. The equivalent
mutants are listed in ``tests/mutants/equivalent.py``, each with the reason it cannot change
behaviour; one that gets killed anyway is reported (the reason was wrong).

Usage::

    make mutants                               # everything; MUTANTS_ARGS passes options
    python -m tests.mutants --list             # the catalogue
    python -m tests.mutants -k release -k wake # the mutants whose name has either word
    python -m tests.mutants --jobs 1 --show reserve-wake-pass-on-removed   # print the diff

``tests/mutants/test_catalogue.py`` (part of the ordinary suite) checks that every mutant still
applies to the current sources, so an edit that moves a mutated line fails ``make test`` too.
"""
