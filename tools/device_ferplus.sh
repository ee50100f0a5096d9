#!/usr/bin/env bash
# One prepared GPU session: unpack FER+ (carried as .devdata/ferplus_packed), run the FER+ table, export to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FER_LAB_CACHE=/tmp/flcache OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, sys; print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
t0=$(date +%s)
python3 tools/ferplus_pack.py unpack .devdata/ferplus_packed /tmp/ferplus > /dev/null || exit 3
echo "unpacked in $(( $(date +%s) - t0 ))s"
python3 tools/ferplus_table.py --root /tmp/ferplus --out /tmp/tbl --epochs "${EPOCHS:-auto}" --budget-s "${BUDGET:-400}" \
  --seeds ${SEEDS:-0 1 2} --device cuda --export "$OUT" 2>&1 | tee "$OUT/driver.log"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
