#!/usr/bin/env python3
"""Compile a CUDA source through NVRTC (no GPU, no nvcc needed) and report ptxas stats.

Uses the pinned PyPI wheels (see docs/dev/tile-gemm.md and BRIEF.md section 7):

    python3 -m pip install --target /opt/nvrtc \
        nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85

Usage:
    scripts/nvrtc_check.py FILE.cu [--arch sm_90] [-DNAME[=VALUE] ...] [-I DIR ...]
                           [--root /opt/nvrtc/nvidia/cu13] [--ptx OUT.ptx] [--quiet]

The source is compiled with `-default-device -std=c++17 --ptxas-options=-v` (plus
`-arch=<arch>`, the wheel's include/ and include/cccl, the file's own directory and any
-D / -I given). The NVRTC log, which holds ptxas' per-kernel "Used N registers",
"bytes stack frame, N bytes spill stores, N bytes spill loads" and smem lines, is printed.

Exit status: 0 on success; 1 on a compile error; 2 if any function spills registers
(non-zero "bytes spill stores" or "bytes spill loads"); 3 if the NVRTC wheel is missing.
"""

import argparse
import ctypes
import os
import re
import sys

DEFAULT_ROOT = os.environ.get("FLASHDMOE_NVRTC_ROOT", "/opt/nvrtc/nvidia/cu13")
INSTALL_HINT = (
    "python3 -m pip install --target /opt/nvrtc "
    "nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
)


def load_nvrtc(root):
    lib = os.path.join(root, "lib", "libnvrtc.so.13")
    if not os.path.exists(lib):
        sys.stderr.write(
            f"nvrtc_check: {lib} not found.\nInstall the pinned NVRTC wheels with:\n  {INSTALL_HINT}\n"
            "(or point FLASHDMOE_NVRTC_ROOT / --root at another nvidia/cu13 directory)\n"
        )
        sys.exit(3)
    # libnvrtc dlopens libnvrtc-builtins by bare soname at compile time. Loading it first by
    # full path makes the dynamic loader find it already resident (no LD_LIBRARY_PATH needed).
    libdir = os.path.dirname(lib)
    for name in sorted(os.listdir(libdir)):
        if name.startswith("libnvrtc-builtins.so"):
            ctypes.CDLL(os.path.join(libdir, name), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


def check(nvrtc, rc, what):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        msg = nvrtc.nvrtcGetErrorString(rc).decode()
        raise RuntimeError(f"{what} failed: {msg} ({rc})")


def compile_source(nvrtc, path, arch, defines, includes, root):
    with open(path, "rb") as f:
        src = f.read()
    prog = ctypes.c_void_p()
    check(
        nvrtc,
        nvrtc.nvrtcCreateProgram(
            ctypes.byref(prog), ctypes.c_char_p(src), ctypes.c_char_p(os.path.basename(path).encode()),
            0, None, None,
        ),
        "nvrtcCreateProgram",
    )
    opts = [
        f"-arch={arch}",
        "-default-device",
        "-std=c++17",
        "--ptxas-options=-v",
        f"-I{os.path.join(root, 'include')}",
        f"-I{os.path.join(root, 'include', 'cccl')}",
        f"-I{os.path.dirname(os.path.abspath(path))}",
    ]
    opts += [f"-I{d}" for d in includes]
    opts += [f"-D{d}" for d in defines]
    c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), c_opts)

    log_size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(log_size))
    log = ctypes.create_string_buffer(log_size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    log = log.value.decode(errors="replace")

    ptx = None
    if rc == 0:
        ptx_size = ctypes.c_size_t()
        nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size))
        buf = ctypes.create_string_buffer(ptx_size.value)
        nvrtc.nvrtcGetPTX(prog, buf)
        ptx = buf.value.decode(errors="replace")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log, ptx, opts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]")
    ap.add_argument("-I", dest="includes", action="append", default=[], metavar="DIR")
    ap.add_argument("--root", default=DEFAULT_ROOT, help="directory holding lib/ and include/ of the wheels")
    ap.add_argument("--ptx", help="also write the PTX here")
    ap.add_argument("--quiet", action="store_true", help="print only the ptxas summary lines")
    args = ap.parse_args()

    nvrtc = load_nvrtc(args.root)
    rc, log, ptx, opts = compile_source(nvrtc, args.file, args.arch, args.defines, args.includes, args.root)

    if args.quiet:
        keep = re.compile(r"Compiling entry|Function properties|spill|Used \d+ registers|error|warning")
        print("\n".join(l for l in log.splitlines() if keep.search(l)))
    else:
        print(log)
    if rc != 0:
        print(f"nvrtc_check: COMPILE FAILED ({args.file}, {' '.join(opts)})", file=sys.stderr)
        return 1
    if args.ptx and ptx is not None:
        with open(args.ptx, "w") as f:
            f.write(ptx)

    spills = [
        (int(s), int(l))
        for s, l in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    ]
    bad = [x for x in spills if x != (0, 0)]
    if bad:
        print(f"nvrtc_check: REGISTER SPILLS in {len(bad)} function(s): {bad}", file=sys.stderr)
        return 2
    print(f"nvrtc_check: OK ({args.file}, {args.arch}, {len(spills)} function(s), no spills)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
