#!/usr/bin/env python3
"""Trains a BPE model with the sentencepiece library and Llama 2's options, for comparison in the tests.
usage: spm_train_reference.py OUT_PREFIX VOCAB_SIZE FILE..."""
import sys

import sentencepiece as spm

prefix, vocab, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
spm.SentencePieceTrainer.train(
    input=",".join(files), model_prefix=prefix, model_type="bpe", vocab_size=vocab, split_digits=True,
    byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.99995,
    num_threads=1, minloglevel=2)
