// Which precision a run's matmuls use. bf16 needs the CPU to run it natively (AVX-512 BF16 or AMX, as
// oneDNN reports the ISA it dispatches to); elsewhere oneDNN would emulate it, slower than fp32.
import Foundation
import Kernels

/// The precision of the matmuls (see LlamaModel.precision).
public enum Precision: String, Codable, Sendable, CaseIterable {
    case fp32, bf16
}

public enum PrecisionChoice {
    /// Set to 0 to act as a CPU without native bf16 (tests of the fallback; benchmarks of fp32).
    public static let overrideVariable = "LLAMA_TRAIN_CPU_BF16"

    /// Whether bf16 runs natively here, and the environment does not say otherwise.
    public static var nativeBF16: Bool {
        if ProcessInfo.processInfo.environment[overrideVariable] == "0" { return false }
        return lm_bf16_supported() != 0
    }

    /// The precision for a run that asked for `requested` (nil: the default), and the line to log. An
    /// explicit bf16 on a CPU without it is an error naming what to do.
    public static func resolve(_ requested: Precision?) throws -> (precision: Precision, message: String) {
        let native = nativeBF16
        switch requested {
        case .fp32?:
            return (.fp32, "precision: fp32 matmuls (OpenBLAS), as configured")
        case .bf16?:
            guard native else { throw PrecisionError() }
            return (.bf16, "precision: bf16 matmuls (oneDNN) with fp32 masters, gradients and optimizer, as configured")
        case nil:
            return native
                ? (
                    .bf16,
                    "precision: bf16 matmuls (oneDNN; this CPU has AVX-512 BF16 or AMX) with fp32 masters, gradients and optimizer"
                )
                : (
                    .fp32,
                    "precision: fp32, since this CPU has no AVX-512 BF16 or AMX (bf16 would be emulated, slower than fp32)"
                )
        }
    }
}

public struct PrecisionError: Error, CustomStringConvertible {
    public var description: String {
        "train.precision is bf16, but this CPU has no AVX-512 BF16 or AMX"
            + (ProcessInfo.processInfo.environment[PrecisionChoice.overrideVariable] == "0"
                ? " (\(PrecisionChoice.overrideVariable)=0 says so)" : "")
            + "; use --precision fp32, or leave train.precision out to choose by CPU"
    }
}
