"""keras_reid.cpu_kind names the CPU a run computed on.

Guaranteed (keras_reid/cpu_kind.py): the level is the highest vector
instruction set among /proc/cpuinfo's flags (amx > avx512_bf16 > avx512 >
avx2 > avx; "no_avx" for an x86 CPU with none), read from the first
processor's "flags" line; the model name is the first one given; without x86
flags (no such file, another architecture) the level is the machine's name.
Oracle: cpuinfo files written here by hand, in Linux's format.
"""

from __future__ import annotations

import platform

import pytest

from keras_reid import cpu_kind

_AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma bmi2

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma bmi2
"""

_AVX512_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 avx512vl
"""

_AMX = _AVX512_BF16.replace("avx512vl", "avx512vl amx_bf16 amx_tile amx_int8")

_AVX512_NO_BF16 = """model name\t: Intel(R) Xeon(R) Gold 6148
flags\t\t: avx avx2 fma avx512f avx512cd
"""

_OLD_X86 = """model name\t: Intel(R) Core(TM)2 Duo
flags\t\t: fpu sse sse2 ssse3
"""

_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("text, isa, flags", [
    (_AVX2_EPYC, "avx2", ["avx", "avx2", "fma"]),
    (_AVX512_NO_BF16, "avx512", ["avx", "avx2", "fma", "avx512f"]),
    (_AVX512_BF16, "avx512_bf16",
     ["avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]),
    (_AMX, "amx", ["avx", "avx2", "fma", "avx512f", "avx512_vnni",
                   "avx512_bf16", "amx_tile", "amx_bf16"]),
    (_OLD_X86, "no_avx", []),
])
def test_level_and_flags_from_cpuinfo(tmp_path, text, isa, flags):
  path = tmp_path / "cpuinfo"
  path.write_text(text)
  described = cpu_kind.describe(str(path))
  assert described["vector_isa"] == isa
  assert described["flags"] == flags


def test_model_is_the_first_processors(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(_AVX2_EPYC.replace("model name\t: AMD EPYC\nflags",
                                     "model name\t: AMD EPYC 7B13\nflags", 1))
  assert cpu_kind.describe(str(path))["model"] == "AMD EPYC 7B13"


@pytest.mark.parametrize("text", [None, _ARM])
def test_without_x86_flags_the_level_is_the_machine(tmp_path, text):
  path = tmp_path / "cpuinfo"
  if text is not None:
    path.write_text(text)
  described = cpu_kind.describe(str(path))
  assert described["vector_isa"] == (platform.machine() or "unknown")
  assert described["flags"] == []
  assert described["model"] is None


def test_this_machine_is_described():
  # Whatever CPU runs the tests: a level and only known flags.
  described = cpu_kind.describe()
  assert described["vector_isa"]
  assert set(described["flags"]) <= set(cpu_kind.VECTOR_FLAGS)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
