#!/usr/bin/env bash
# test_aws_model.sh: the committed service models (lua/pgtide/aws/model/)
# are exactly what tests/lib/aws_model_gen.py makes from the image's
# botocore.  A difference means botocore changed: rerun the generator and
# review the diff (the request tests then check the new shapes).
cd "$(dirname "$0")/../.."
if ! python3 -c 'import botocore' 2>/dev/null; then
  echo "skip - aws models up to date: botocore is not importable"
  exit 0
fi
python3 tests/lib/aws_model_gen.py --check
