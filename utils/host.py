"""What the machine offers, read without TensorFlow (so usable before it loads): the CPU's feature flags, the
memory available, and glibc's malloc on transparent huge pages for training.

Why huge pages: on CPUs with AVX2 and no AVX-512, training takes the wide layers' weight gradients through
oneDNN's NCHW kernel (nets/conv_gradients.py), whose im2col scratch buffers (up to ~50 MB per call) are above
glibc's largest mmap threshold (32 MiB), so each is mapped and unmapped on every call and the kernel zero-fills
it 4 KiB at a time: 367k page faults and ~1 s of system time in a 10 s step (depth 1.0, batch 8; measured with
whole-image buffers of up to ~200 MB, the same bytes per step). With
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, malloc asks for transparent huge pages (2 MiB) where the kernel's THP
mode is `madvise`: 14x fewer faults and a faster step (bench/RESULTS.md, issue 9). glibc reads
GLIBC_TUNABLES only when a process starts, so training restarts itself once with it set.
"""
import os
import sys

HUGE_PAGE_TUNABLE = 'glibc.malloc.hugetlb'
_OLDEST_GLIBC = (2, 35)   # the first with glibc.malloc.hugetlb; older ones ignore it


def cpu_flags(cpuinfo_path='/proc/cpuinfo'):
    """The CPU's feature flags as Linux lists them ('avx2', 'avx512f', ...); empty where the file is missing."""
    try:
        with open(cpuinfo_path) as cpuinfo:
            return {flag for line in cpuinfo if line.startswith('flags') for flag in line.split(':', 1)[1].split()}
    except OSError:
        return set()


def available_memory_bytes(meminfo_path='/proc/meminfo'):
    """Memory available to new allocations without swapping (Linux's MemAvailable), else the free physical
    pages; None when neither can be read."""
    try:
        with open(meminfo_path) as meminfo:
            for line in meminfo:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


def transparent_huge_page_mode(path='/sys/kernel/mm/transparent_hugepage/enabled'):
    """The kernel's THP mode, the bracketed word of '[always] madvise never'; None where the file is missing."""
    try:
        with open(path) as modes:
            text = modes.read()
    except OSError:
        return None
    start, end = text.find('['), text.find(']')
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version():
    """(major, minor) of the C library when it is glibc, else None (musl, macOS)."""
    try:
        name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
    except (AttributeError, ValueError, OSError):
        return None
    return tuple(int(part) for part in version.split('.')[:2]) if name == 'glibc' else None


def tunables_with_huge_page_malloc(environ, flags, thp_mode, libc_version):
    """The GLIBC_TUNABLES value that turns huge-page malloc on, or None where it would not help or the user
    chose: it helps where the NCHW weight-gradient buffers exist (AVX2, no AVX-512), glibc knows the tunable
    (2.35+) and the kernel gives huge pages only to memory that asks (THP mode `madvise`; under `always` it
    gives them anyway). A GLIBC_TUNABLES that already names the tunable is the user's choice (=0 turns it off).
    Other tunables the user set are kept."""
    current = environ.get('GLIBC_TUNABLES', '')
    if (HUGE_PAGE_TUNABLE in _tunable_settings(environ) or thp_mode != 'madvise' or libc_version is None
            or libc_version < _OLDEST_GLIBC or 'avx2' not in flags or 'avx512f' in flags):
        return None
    return ':'.join(filter(None, [current, f'{HUGE_PAGE_TUNABLE}=1']))


def restart_with_huge_page_malloc():
    """Re-executes this program (same interpreter, options and arguments) with huge-page malloc, where
    tunables_with_huge_page_malloc says it helps; returns where it does not (then or in the restarted process,
    whose GLIBC_TUNABLES names the tunable). Call it from the program's main module before TensorFlow loads:
    the restart discards the process."""
    tunables = tunables_with_huge_page_malloc(os.environ, cpu_flags(), transparent_huge_page_mode(),
                                              glibc_version())
    if tunables is None or not sys.executable:
        return
    os.environ['GLIBC_TUNABLES'] = tunables
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def _tunable_settings(environ):
    """{tunable: value} of GLIBC_TUNABLES ('name=value:name=value')."""
    return dict(item.partition('=')[::2] for item in environ.get('GLIBC_TUNABLES', '').split(':') if item)


def malloc_description(environ):
    """One line for the start-up report when GLIBC_TUNABLES sets huge-page malloc (on or off); else None."""
    settings = _tunable_settings(environ)
    if HUGE_PAGE_TUNABLE not in settings:
        return None
    value = f'GLIBC_TUNABLES={environ["GLIBC_TUNABLES"]}'
    if settings[HUGE_PAGE_TUNABLE] == '0':
        return f'memory: glibc malloc on 4 KiB pages ({value})'
    return (f'memory: glibc malloc on transparent huge pages ({value}: fewer page faults in oneDNN\'s large '
            f'scratch buffers; {HUGE_PAGE_TUNABLE}=0 turns it off)')
