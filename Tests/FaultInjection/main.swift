// llama-train with faults: `FaultInjection --nan-at-step K` or `--die-in-checkpoint RANK`, then the usual
// command line. The tests run this twin instead of llama-train where they need a fault (a NaN loss at step K on
// every rank; rank RANK killed after its shard is written and before the checkpoint commits).
import Commands
import Foundation
import Support

LlamaTrain.ensurePassiveOpenMP()  // as llama-train starts; the faults below are read after the re-exec
var arguments = Array(CommandLine.arguments.dropFirst())
while let flag = arguments.first, flag == "--nan-at-step" || flag == "--die-in-checkpoint" {
    guard arguments.count >= 2, let value = Int(arguments[1]) else {
        FileHandle.standardError.write(Data("FaultInjection: \(flag) needs an integer\n".utf8))
        exit(2)
    }
    if flag == "--nan-at-step" {
        FaultInjection.lossAtStep = { step in step == value ? .nan : nil }
    } else {
        FaultInjection.shardWritten = { rank in if rank == value { kill(getpid(), SIGKILL) } }
    }
    arguments.removeFirst(2)
}
LlamaTrain.main(arguments)
