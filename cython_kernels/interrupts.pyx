# The kernels' interrupt flag outside a PostgreSQL backend.
"""The flag the kernels poll when no backend provides one (see
``_interrupt.pxd``): inside a backend the bridge's flag is used and this one
is ignored. Tests set it to check that a kernel stops.
"""

from cpython.pycapsule cimport PyCapsule_New

cdef extern from *:
    """
    #include <signal.h>
    static volatile sig_atomic_t orochi_local_interrupt_flag = 0;
    static void *orochi_local_flag_address(void) { return (void *) &orochi_local_interrupt_flag; }
    static void orochi_local_flag_set(int v) { orochi_local_interrupt_flag = v; }
    static int orochi_local_flag_get(void) { return orochi_local_interrupt_flag; }
    """
    void* orochi_local_flag_address()
    void orochi_local_flag_set(int v)
    int orochi_local_flag_get()


def flag_capsule():
    """A capsule holding the flag's address (named as the bridge's)."""
    return PyCapsule_New(orochi_local_flag_address(), b"orochi._orochi_pg.interrupt_flag", NULL)


def set_flag(bint value):
    """Raise (True) or clear (False) the flag, as the bridge does on a cancel."""
    orochi_local_flag_set(1 if value else 0)


def get_flag() -> bool:
    return orochi_local_flag_get() != 0


def in_backend() -> bool:
    """Whether the kernels poll the bridge's flag (running in a backend)."""
    try:
        import _orochi_pg
    except ImportError:
        return False
    return hasattr(_orochi_pg, "interrupt_flag")
