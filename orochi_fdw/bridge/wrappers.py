"""Which classes may serve a table: the declared wrappers.

A foreign table's wrapper is the ``wrapper`` option of the table, else of
its server, else ``columnar``.  Only *declared* wrappers load; the option
never imports an arbitrary module:

- ``columnar`` (``orochi_fdw.columnar.ColumnarTable``), Orochi's engine;
- the entry points of the group ``orochi.wrappers`` that installed
  distributions declare (a package ships a wrapper by declaring, in its
  ``setup.py`` or ``pyproject.toml``,
  ``entry_points={"orochi.wrappers": ["name = package.module:Class"]}``;
  installing a package into the server's virtualenv is an administrator's
  act);
- the entry points of the group ``orochi.test_wrappers``: the small
  wrappers the orochi package ships for its own tests
  (:mod:`orochi_fdw.testing.wrappers`; one of them appends to a file its
  table names).  They load only while the superuser-only setting
  ``orochi.allow_test_wrappers`` is on (the test harness sets it).

The option names a wrapper by its declared name (``columnar``) or by the
dotted path of its class (``orochi_fdw.columnar.ColumnarTable``), which must
be the path of a declared class.

Who may name which, checked when the option is written (CREATE / ALTER of
a server or table, :func:`check_may_use`): a superuser may name any declared
wrapper; another role only those listed in the superuser-only setting
``orochi.trusted_wrappers`` (default ``columnar``).  A table without the
option uses its server's wrapper, which whoever made the server chose.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from orochi_fdw.errors import InsufficientPrivilegeError, InvalidOptionValueError, WrapperError

#: the entry point groups of declared wrappers
GROUP = "orochi.wrappers"
TEST_GROUP = "orochi.test_wrappers"

#: the name of the default wrapper, Orochi's columnar engine
DEFAULT = "columnar"

ALLOW_TEST_SETTING = "orochi.allow_test_wrappers"
TRUSTED_SETTING = "orochi.trusted_wrappers"


@dataclass(frozen=True)
class DeclaredWrapper:
    """A wrapper class that may serve tables.

    Attributes:
        name: its declared name (what the ``wrapper`` option may say).
        target: ``package.module:Class``.
        test: whether it is one of the package's test wrappers.
    """

    name: str
    target: str
    test: bool = False

    @property
    def path(self) -> str:
        """``package.module.Class``, the other way to name it."""
        return self.target.replace(":", ".")


#: the wrapper of distributed and reference tables (orochi_fdw.cluster): it
#: serves only tables orochi.create_distributed_table registered (after its
#: own check that the caller owns the table), so any role may name it
DISTRIBUTED = "distributed"

_BUILTIN = {DEFAULT: DeclaredWrapper(DEFAULT, "orochi_fdw.columnar.table:ColumnarTable"),
            DISTRIBUTED: DeclaredWrapper(DISTRIBUTED, "orochi_fdw.cluster.table:DistributedTable")}
#: dotted paths that name the built-in wrappers (their module and their package)
_BUILTIN_PATHS = {"orochi_fdw.columnar.ColumnarTable": DEFAULT, "orochi_fdw.columnar.table.ColumnarTable": DEFAULT,
                  "orochi_fdw.cluster.DistributedTable": DISTRIBUTED,
                  "orochi_fdw.cluster.table.DistributedTable": DISTRIBUTED}

#: the table extensions of the columnar engine (orochi_fdw.columnar.extensions),
#: imported before a wrapper built on it serves a table: importing one
#: registers it
COLUMNAR_EXTENSIONS = ("orochi_fdw.timeseries",)

_declared: dict[str, DeclaredWrapper] | None = None
_classes: dict[str, type] = {}


def declared() -> dict[str, DeclaredWrapper]:
    """Every declared wrapper by name (read once per backend: a package
    installed later is seen by new sessions)."""
    global _declared
    if _declared is None:
        from importlib.metadata import entry_points

        found = dict(_BUILTIN)
        for group, test in ((GROUP, False), (TEST_GROUP, True)):
            for ep in entry_points(group=group):
                found.setdefault(ep.name, DeclaredWrapper(ep.name, ep.value, test))
        _declared = found
    return _declared


def find(option: str) -> DeclaredWrapper:
    """The declared wrapper a ``wrapper`` option names.

    Raises:
        InvalidOptionValueError: no declared wrapper has that name or path
            (SQLSTATE HV024).
    """
    name = option.strip()
    builtin = _BUILTIN.get(name) or _BUILTIN.get(_BUILTIN_PATHS.get(name, ""))
    if builtin is not None:
        return builtin
    wrappers = declared()
    if name in wrappers:
        return wrappers[name]
    path = name.replace(":", ".")
    for entry in wrappers.values():
        if entry.path == path:
            return entry
    names = ", ".join(sorted(n for n, e in wrappers.items() if not e.test or test_wrappers_allowed()))
    raise InvalidOptionValueError(
        f'wrapper "{option}" is not a declared orochi wrapper',
        hint=f"Declared wrappers: {names}. A package declares its wrappers as entry points "
             f'of the group "{GROUP}".')


def is_default(option: str | None) -> bool:
    """Whether a ``wrapper`` option (None: absent) names the columnar
    engine; an option naming no declared wrapper does not."""
    if not option:
        return True
    try:
        return find(option).name == DEFAULT
    except InvalidOptionValueError:
        return False


def _setting(name: str) -> str | None:
    from orochi_fdw.bridge import spi

    if not spi.available():
        return None
    return spi.setting(name)


def test_wrappers_allowed() -> bool:
    """Whether ``orochi.allow_test_wrappers`` is on (outside a backend: yes)."""
    from orochi_fdw.bridge import spi

    if not spi.available():
        return True
    return (_setting(ALLOW_TEST_SETTING) or "off").lower() in ("on", "true", "yes", "1")


def trusted_names() -> set[str]:
    """The wrappers roles other than superusers may name (``orochi.trusted_wrappers``)."""
    raw = _setting(TRUSTED_SETTING)
    if raw is None:
        return {DEFAULT}
    return {part.strip().strip('"') for part in raw.split(",") if part.strip()}


def _require_test_allowed(entry: DeclaredWrapper) -> None:
    if entry.test and not test_wrappers_allowed():
        raise InsufficientPrivilegeError(
            f'wrapper "{entry.name}" is a test wrapper of the orochi package, which this server does not load',
            hint=f"A superuser may allow test wrappers with {ALLOW_TEST_SETTING} = on "
                 "(never on a production server).")


def load(option: str) -> type:
    """The class of the declared wrapper ``option`` names.

    Raises:
        InvalidOptionValueError: not a declared wrapper.
        InsufficientPrivilegeError: a test wrapper while they are not allowed.
        WrapperError: the declared class cannot be imported or is no wrapper.
    """
    entry = find(option)
    _require_test_allowed(entry)
    cls = _classes.get(entry.target)
    if cls is not None:
        return cls
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WrapperError(f'could not import the module of wrapper "{entry.name}" ({entry.target}): {exc}') from None
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise WrapperError(f'wrapper "{entry.name}": module {module_name} has no class "{class_name}"')
    if not callable(getattr(cls, "execute", None)):
        raise WrapperError(f'wrapper "{entry.name}" ({entry.target}) has no execute method')
    if any(c.__module__.startswith("orochi_fdw.columnar.") for c in cls.__mro__):
        for name in COLUMNAR_EXTENSIONS:
            importlib.import_module(name)
    _classes[entry.target] = cls
    return cls


def check_may_use(option: str) -> DeclaredWrapper:
    """Refuse a ``wrapper`` option the current role may not write.

    Raises:
        InvalidOptionValueError: not a declared wrapper.
        InsufficientPrivilegeError: a test wrapper while they are not allowed,
            or a role other than a superuser naming a wrapper that
            ``orochi.trusted_wrappers`` does not list.
    """
    from orochi_fdw.bridge import spi

    entry = find(option)
    _require_test_allowed(entry)
    if not spi.is_superuser() and entry.name not in trusted_names() and entry.name != DISTRIBUTED:
        raise InsufficientPrivilegeError(
            f'permission denied to use wrapper "{entry.name}"',
            detail=f"Roles other than superusers may use the wrappers listed in {TRUSTED_SETTING}.",
            hint=f"A superuser may add it to {TRUSTED_SETTING}, or make a server with it "
                 "and grant USAGE on that server.")
    return entry
