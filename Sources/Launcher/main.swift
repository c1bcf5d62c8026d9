// llama-train: the executable. The command line itself (parsing, dispatch, exit codes) is the Commands
// library (LlamaTrain.swift); the work lives in the modules below it.
//
//   llama-train pretrain --config configs/demo.json
//   mpirun -np 2 llama-train pretrain --config configs/demo.json --out runs/m
import Commands
import Foundation

// oneDNN's OpenMP threads (libgomp) spin for a while after every product by default, and on a rank's few
// cores that spinning takes the core our own threads need for attention and the row-wise kernels (2 threads:
// 1.49× one thread passive against 1.38× spinning, bench-small in bf16). libgomp reads OMP_WAIT_POLICY once,
// when it loads, so a process started without it sets it and replaces itself, before anything else runs. It
// executes its own resolved path, not /proc/self/exe, so ps, top, Slurm and the OOM killer name it llama-train.
if ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
    if let path = realpath("/proc/self/exe", nil) {
        execv(path, CommandLine.unsafeArgv)  // returns only on failure: then run as we are
        free(path)
    }
}

LlamaTrain.main(Array(CommandLine.arguments.dropFirst()))
