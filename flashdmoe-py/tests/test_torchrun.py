"""flashdmoe.MoE(..., group=WORLD) under torchrun on 2 GPUs (torchrun_check.py, small layer
only: the paper-sized one is scripts/gpu-torchrun.sh's). Skipped, visibly, without 2 GPUs."""

import os
import subprocess
import sys

import pytest
import torch

if torch.cuda.device_count() < 2:
    pytest.skip("skipped: needs 2 GPUs (torch.cuda.device_count() < 2)", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_ranks_match_the_reference_under_torchrun():
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "NVSHMEM_DISABLE_NVLS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(HERE, "torchrun_check.py"), "--small-only"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "verdict: PASS" in out, out
