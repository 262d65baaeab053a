"""utils/host.py: the machine facts read without TensorFlow, and the restart with glibc's huge-page malloc
(where it applies, what GLIBC_TUNABLES becomes, and that the program restarts once with its own interpreter
options and arguments)."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.train_fixtures import ROOT
from utils import host

AVX2 = {'fpu', 'sse2', 'avx2', 'fma'}


@pytest.mark.parametrize('environ, flags, thp_mode, libc, expected', [
    ({}, AVX2, 'madvise', (2, 36), 'glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, AVX2, 'madvise', (2, 35),
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, AVX2, 'madvise', (2, 36), None),   # the user's choice
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, AVX2, 'madvise', (2, 36), None),   # already restarted
    ({}, AVX2 | {'avx512f'}, 'madvise', (2, 36), None),   # no NCHW weight gradients there
    ({}, {'sse2', 'avx'}, 'madvise', (2, 36), None),
    ({}, AVX2, 'always', (2, 36), None),                  # the kernel gives huge pages anyway
    ({}, AVX2, 'never', (2, 36), None),
    ({}, AVX2, None, (2, 36), None),                      # no THP (or not Linux)
    ({}, AVX2, 'madvise', (2, 34), None),                 # glibc before the tunable
    ({}, AVX2, 'madvise', None, None),                    # not glibc
])
def test_huge_page_malloc_applies_only_where_it_helps(environ, flags, thp_mode, libc, expected):
    assert host.tunables_with_huge_page_malloc(environ, flags, thp_mode, libc) == expected


def test_machine_facts_are_read_from_their_files(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n')
    assert host.cpu_flags(str(cpuinfo)) == AVX2
    thp = tmp_path / 'enabled'
    thp.write_text('always [madvise] never\n')
    assert host.transparent_huge_page_mode(str(thp)) == 'madvise'
    missing = str(tmp_path / 'missing')
    assert host.cpu_flags(missing) == set() and host.transparent_huge_page_mode(missing) is None


def test_start_up_report_line_says_what_glibc_was_told():
    assert host.malloc_description({}) is None
    assert host.malloc_description({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}) is None
    on = host.malloc_description({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'})
    assert on.startswith('memory: glibc malloc on transparent huge pages '
                         '(GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1: ')
    assert host.malloc_description({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) == \
        'memory: glibc malloc on 4 KiB pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=0)'


# A main program as train_ssd_network.py is one, on a machine where huge-page malloc applies.
_PROGRAM = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from utils import host
    host.cpu_flags = lambda: {'avx2'}
    host.transparent_huge_page_mode = lambda: 'madvise'
    host.glibc_version = lambda: (2, 36)
    print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.flags.utf8_mode, sys.argv[2:], flush=True)
    host.restart_with_huge_page_malloc()
    print('past the restart', os.getpid(), os.environ.get('GLIBC_TUNABLES'))
''')


@pytest.mark.parametrize('user_tunables, expected', [
    (None, 'glibc.malloc.hugetlb=1'),
    ('glibc.malloc.arena_max=2', 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
])
def test_program_restarts_once_with_its_options_and_arguments(tmp_path, user_tunables, expected):
    program = tmp_path / 'program.py'
    program.write_text(_PROGRAM)
    env = {key: value for key, value in os.environ.items() if key != 'GLIBC_TUNABLES'}
    env.update({'GLIBC_TUNABLES': user_tunables} if user_tunables else {})
    result = subprocess.run([sys.executable, '-X', 'utf8', str(program), ROOT, '--flag=a b', 'c'],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second, past = result.stdout.splitlines()
    pid = first.split()[1]
    assert first == f"start {pid} {user_tunables} 1 ['--flag=a b', 'c']"
    assert second == f"start {pid} {expected} 1 ['--flag=a b', 'c']"   # the same process, re-executed
    assert past == f'past the restart {pid} {expected}'


def test_program_is_not_restarted_when_the_user_chose(tmp_path):
    program = tmp_path / 'program.py'
    program.write_text(_PROGRAM)
    env = dict(os.environ, GLIBC_TUNABLES='glibc.malloc.hugetlb=0')
    result = subprocess.run([sys.executable, str(program), ROOT], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ['start', 'past']
    assert result.stdout.rstrip().endswith('glibc.malloc.hugetlb=0')


def test_available_memory_is_meminfos_else_the_free_pages(tmp_path):
    meminfo = tmp_path / 'meminfo'
    meminfo.write_text('MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n')
    assert host.available_memory_bytes(str(meminfo)) == 20000000 * 1024
    free_pages = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    assert abs(host.available_memory_bytes(str(tmp_path / 'missing')) - free_pages) < 0.1 * free_pages
