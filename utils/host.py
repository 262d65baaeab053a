"""What the machine offers, read without TensorFlow (so usable before it loads): the CPU's feature flags, and
the glibc malloc settings training restarts itself with.

Why a fixed mmap threshold: glibc maps a freed buffer's size into its mmap threshold (up to 32 MiB), so after
the first step oneDNN's scratch and reorder buffers of 1-32 MiB come from malloc's arenas, which keep the
memory when they are freed. GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 fixes the threshold at 1 MiB:
such buffers are mapped and go back to the system when freed, and the full-width training step's peak RSS at
batch 8 falls by 0.07-0.12 GiB, for 3x the page faults and about 1 s more system time in 8 steps (bench/RESULTS.md,
issue 9).

Why huge pages: on CPUs with AVX2 and no AVX-512, training takes the wide layers' weight gradients through
oneDNN's NCHW kernel (nets/conv_gradients.py), whose im2col scratch buffer (up to ~200 MB per call) is above
glibc's mmap threshold, so it is mapped and unmapped on every call and the kernel zero-fills it 4 KiB at a
time: 367k page faults and ~1 s of system time in a 10 s step (depth 1.0, batch 8). With
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, malloc asks for transparent huge pages (2 MiB) where the kernel's THP
mode is `madvise`: 14x fewer faults and a faster step (bench/RESULTS.md, issue 9).

glibc reads GLIBC_TUNABLES only when a process starts, so training restarts itself once with them set.
"""
import os
import sys

HUGE_PAGE_TUNABLE = 'glibc.malloc.hugetlb'
MMAP_THRESHOLD_TUNABLE = 'glibc.malloc.mmap_threshold'
MMAP_THRESHOLD_BYTES = 1 << 20
_OLDEST_GLIBC_WITH_TUNABLES = (2, 26)
_OLDEST_GLIBC_WITH_HUGE_PAGES = (2, 35)   # the first with glibc.malloc.hugetlb; older ones ignore it


def cpu_flags(cpuinfo_path='/proc/cpuinfo'):
    """The CPU's feature flags as Linux lists them ('avx2', 'avx512f', ...); empty where the file is missing."""
    try:
        with open(cpuinfo_path) as cpuinfo:
            return {flag for line in cpuinfo if line.startswith('flags') for flag in line.split(':', 1)[1].split()}
    except OSError:
        return set()


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


def training_malloc_tunables(environ, flags, thp_mode, libc_version):
    """The GLIBC_TUNABLES value training runs with, or None where it would add nothing: the fixed mmap threshold
    wherever glibc reads tunables (2.26+), and huge-page malloc where it helps, that is where the NCHW
    weight-gradient buffers exist (AVX2, no AVX-512), glibc knows the tunable (2.35+) and the kernel gives huge
    pages only to memory that asks (THP mode `madvise`; under `always` it gives them anyway). A tunable that
    GLIBC_TUNABLES already names is the user's choice (hugetlb=0 turns huge pages off); other tunables the user
    set are kept."""
    settings = _tunable_settings(environ)
    added = []
    if libc_version is not None and libc_version >= _OLDEST_GLIBC_WITH_TUNABLES:
        if MMAP_THRESHOLD_TUNABLE not in settings:
            added.append(f'{MMAP_THRESHOLD_TUNABLE}={MMAP_THRESHOLD_BYTES}')
        if (HUGE_PAGE_TUNABLE not in settings and thp_mode == 'madvise'
                and libc_version >= _OLDEST_GLIBC_WITH_HUGE_PAGES and 'avx2' in flags and 'avx512f' not in flags):
            added.append(f'{HUGE_PAGE_TUNABLE}=1')
    if not added:
        return None
    return ':'.join(filter(None, [environ.get('GLIBC_TUNABLES', '')] + added))


def restart_with_training_malloc():
    """Re-executes this program (same interpreter, options and arguments) with training_malloc_tunables' settings;
    returns where there are none to add (then or in the restarted process, whose GLIBC_TUNABLES names them).
    Call it from the program's main module before TensorFlow loads: the restart discards the process."""
    tunables = training_malloc_tunables(os.environ, cpu_flags(), transparent_huge_page_mode(), glibc_version())
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
    """One line for the start-up report of what GLIBC_TUNABLES sets of these two (on or off); else None."""
    settings = _tunable_settings(environ)
    parts = []
    if MMAP_THRESHOLD_TUNABLE in settings:
        parts.append(f'mmap threshold fixed at {settings[MMAP_THRESHOLD_TUNABLE]} bytes (freed buffers of that size '
                     'and more go back to the system: a lower peak)')
    if settings.get(HUGE_PAGE_TUNABLE) == '0':
        parts.append('4 KiB pages')
    elif HUGE_PAGE_TUNABLE in settings:
        parts.append(f'transparent huge pages (fewer page faults in oneDNN\'s large scratch buffers; '
                     f'{HUGE_PAGE_TUNABLE}=0 turns them off)')
    if not parts:
        return None
    return 'memory: glibc malloc with ' + ', '.join(parts) + f' (GLIBC_TUNABLES={environ["GLIBC_TUNABLES"]})'
