// llama-train: the executable. The command line itself (parsing, dispatch, exit codes) is the Commands
// library (LlamaTrain.swift); the work lives in the modules below it.
//
//   llama-train pretrain --config configs/demo.json
//   mpirun -np 2 llama-train pretrain --config configs/demo.json --out runs/m
import Commands

LlamaTrain.ensurePassiveOpenMP()
LlamaTrain.main(Array(CommandLine.arguments.dropFirst()))
