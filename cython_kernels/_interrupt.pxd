# Query cancel for kernels that run without the GIL.
#
# Inside a PostgreSQL backend the C bridge forwards a query cancel,
# statement_timeout or termination to the running Python, and sets a flag
# whose address it exports as the capsule ``_orochi_pg.interrupt_flag``.
# A kernel's long loops poll ``interrupted()`` every INTERRUPT_STRIDE rows
# (or once per block) and, once it is set, stop and raise KeyboardInterrupt
# (``raise_interrupt()``), which the bridge turns into the cancel's real
# reason. Outside a backend the flag is orochi_fdw.kernels.interrupts' own,
# which tests set; it stays 0 otherwise.
#
# Every kernel module that polls calls bind_interrupt_flag() once, at
# import. The polling kernels are those whose work grows with the caller's
# input (filters, aggregation, sketches); the codecs work on one column chunk
# at a time (at most chunk_group_size values, a few milliseconds) and Python
# sees the interrupt between calls.

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid

cdef extern from *:
    """
    #include <signal.h>
    static volatile sig_atomic_t orochi_interrupt_none = 0;
    static volatile sig_atomic_t *orochi_interrupt_ptr = &orochi_interrupt_none;

    static inline int orochi_interrupted(void) { return *orochi_interrupt_ptr != 0; }
    static inline void orochi_bind_interrupt(void *p)
    {
        if (p != NULL)
            orochi_interrupt_ptr = (volatile sig_atomic_t *) p;
    }
    """
    int orochi_interrupted() nogil
    void orochi_bind_interrupt(void* p)

# Rows between two polls in per-row loops (a mask: poll when (i & mask) == 0).
cdef enum:
    INTERRUPT_MASK = 0xFFFF

cdef inline bint interrupted() noexcept nogil:
    return orochi_interrupted()

cdef inline int raise_interrupt() except -1:
    raise KeyboardInterrupt("canceled while a kernel ran")

cdef inline void bind_interrupt_flag() noexcept:
    cdef object capsule = None
    try:
        import _orochi_pg
        capsule = _orochi_pg.interrupt_flag
    except (ImportError, AttributeError):
        try:
            from orochi_fdw.kernels import interrupts
            capsule = interrupts.flag_capsule()
        except ImportError:
            return
    if PyCapsule_IsValid(capsule, b"orochi._orochi_pg.interrupt_flag"):
        orochi_bind_interrupt(PyCapsule_GetPointer(capsule, b"orochi._orochi_pg.interrupt_flag"))
