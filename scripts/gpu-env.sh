# Sourced by every script that runs on the GPU machine (gpu-*.sh): the CUDA toolkit there for
# NVRTC and the driver's libraries, one JIT cache for all the scripts of a device call (a
# variant compiled by one is not compiled again by the next), NCCL's directory
# (scripts/install-nccl.sh), and NVLink multicast off (KINDS.md: these machines must keep it
# off; our windows never need it). A variable already set wins.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=${FLASHDMOE_CUDA_HOME:-/usr/local/cuda}
export FLASHDMOE_CACHE_DIR=${FLASHDMOE_CACHE_DIR:-/tmp/flashdmoe-cache}
export FLASHDMOE_NCCL_DIR=${FLASHDMOE_NCCL_DIR:-/tmp/flashdmoe-nccl}
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
