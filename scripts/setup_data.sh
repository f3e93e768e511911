#!/usr/bin/env bash
# Install the offline datasets fpbench reads, from Debian's packages, when they are missing.
# Fashion-MNIST (tiny zoo), fortunes (language track of fingerprint transfer and the language-model zoo), the
# dictionary, WordNet and Jargon File texts (language-model zoo). Digits ship with scikit-learn.
set -u
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -n "${FPBENCH_FASHION_MNIST:-}" ] || need+=(dataset-fashion-mnist)
# fortunes: English (the language track's base corpus); de, it, es: its downstream corpora
fortunes=/usr/share/games/fortunes
[ -f $fortunes/cookie ] || need+=(fortunes)
[ -d $fortunes/de ] || need+=(fortunes-de)
[ -d $fortunes/it ] || need+=(fortunes-it)
[ -d $fortunes/es ] || need+=(fortunes-es)
# the language-model zoo's other corpora: a dictionary, WordNet's glosses, the Jargon File (fpbench/llm/corpora.py)
[ -f /usr/share/dictd/gcide.dict.dz ] || need+=(dict-gcide)
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
[ -f /usr/share/doc/jargon-text/jargon.txt.gz ] || need+=(jargon-text)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
if command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  if $sudo apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then exit 0; fi
fi
echo "warning: could not install ${need[*]}; the tiny zoo needs Fashion-MNIST, the transfer language track fortunes:" >&2
echo "  apt-get install dataset-fashion-mnist, or set FPBENCH_FASHION_MNIST to a folder with its four idx .gz files" >&2
echo "  apt-get install fortunes fortunes-de fortunes-it fortunes-es, or set FPBENCH_FORTUNES to a folder of fortune files" >&2
exit 0
