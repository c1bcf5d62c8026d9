// swift-tools-version:6.0
// llama-train: a data-parallel Llama 2 trainer for CPUs and MPI.
// No package dependencies: the toolchain, Foundation, Swift Testing, and Debian's OpenMPI, OpenBLAS, oneDNN, zlib, libzstd and libsnappy.
import Foundation
import PackageDescription

// MARK: - Code generation for the C kernels

// The kernels are compiled with optimisation in every configuration (tests run debug builds, and a -O0
// kernel would make them crawl). x86-64-v3 (AVX2 + FMA, 2013 onwards) is the floor on x86; set
// LLAMA_TRAIN_MARCH=native for the build machine's own, or another -march value.
let march: [String] = {
    if let value = ProcessInfo.processInfo.environment["LLAMA_TRAIN_MARCH"], !value.isEmpty {
        return ["-march=\(value)"]
    }
    #if arch(x86_64)
        return ["-march=x86-64-v3"]
    #else
        return []
    #endif
}()
let kernelFlags: [String] = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast"] + march

// MARK: - Targets

let package = Package(
    name: "llama-train",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "llama-train", targets: ["Launcher"])
    ],
    targets: [
        // C: hot loops behind one header (lm_kernels.h); matmuls are OpenBLAS sgemm (fp32) or oneDNN (bf16).
        .target(
            name: "Kernels",
            dependencies: ["CDNNL"],
            cSettings: [.unsafeFlags(kernelFlags)],
            linkerSettings: [
                .linkedLibrary("openblas"), .linkedLibrary("dnnl"), .linkedLibrary("gomp"), .linkedLibrary("m"),
            ]
        ),
        // oneDNN through a module map: the bf16 matmul primitive.
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        // OpenMPI through a module map; the shim exposes the handles that are macros in mpi.h.
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        .target(name: "Distributed", dependencies: ["CMPI", "Support"]),
        // Generic helpers with no knowledge of models: settings declared once per key, SHA-256, atomic files,
        // seeded shuffles, JSON Lines, config errors and overflow-checked sizes.
        .target(name: "Support"),
        .target(name: "Model", dependencies: ["Kernels", "Support"]),
        .target(name: "Optim", dependencies: ["Kernels", "Model", "Support"]),
        .target(name: "Tokenizer", dependencies: ["Support"], swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        // zlib and libzstd through module maps: compressed corpora are read as streams.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // libsnappy through a module map: Parquet's default page codec.
        .systemLibrary(name: "CSnappy", providers: [.apt(["libsnappy-dev"])]),
        .target(name: "Dataset", dependencies: ["Support", "Tokenizer", "CZlib", "CZstd", "CSnappy"]),
        // The effective run configuration: the file, its validation and its fingerprint.
        .target(name: "Configuration", dependencies: ["Model", "Optim", "Support"]),
        // Sharded checkpoints: manifest, commit protocol, verified resume, a parameters-only reader.
        .target(name: "Checkpoint", dependencies: ["Configuration", "Model", "Optim", "Distributed", "Support"]),
        // The data-parallel loop: objectives, batch sources, schedule, step, reporting, checkpoint policy.
        .target(
            name: "Training",
            dependencies: [
                "Configuration", "Checkpoint", "Model", "Optim", "Kernels", "Distributed",
                "Dataset", "Tokenizer", "Support",
            ]),
        // Running a model rather than training it: the KV-cached engine, sampling, continuous batching.
        .target(name: "Inference", dependencies: ["Model", "Kernels", "Tokenizer", "Support"]),
        // SFT packing and reward models: objectives and data of the fine-tuning stages.
        .target(
            name: "FineTune",
            dependencies: [
                "Training", "Inference", "Configuration", "Dataset", "Distributed", "Model", "Tokenizer", "Support",
            ]),
        // Looking at runs and models: plan, scaling simulator, step benchmark, charts.
        .target(
            name: "Tools",
            dependencies: [
                "Training", "Inference", "Configuration", "Model", "Optim", "Kernels", "Tokenizer", "Support",
            ]),
        // The command line as a library: every command's spec, dispatch and exit codes.
        .target(
            name: "Commands",
            dependencies: [
                "Training", "FineTune", "Inference", "Tools", "Checkpoint", "Configuration", "Model",
                "Optim", "Distributed", "Tokenizer", "Dataset", "Support", "Kernels",
            ]),
        .executableTarget(name: "Launcher", dependencies: ["Commands"]),

        // MARK: - Tests

        .target(name: "TestSupport", dependencies: ["Support"], path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Model", "TestSupport"]),
        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(
            name: "ModelTests", dependencies: ["Model", "Optim", "Kernels", "Support", "TestSupport"],
            exclude: ["Fixtures"]),
        .testTarget(name: "OptimTests", dependencies: ["Optim", "Model"]),
        .testTarget(name: "DistributedTests", dependencies: ["Distributed"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "TestSupport"]),
        .testTarget(name: "DatasetTests", dependencies: ["Dataset", "Support", "Tokenizer"]),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "Model", "Optim", "Support"]),
        .testTarget(
            name: "CheckpointTests",
            dependencies: ["Checkpoint", "Configuration", "Model", "Optim", "Distributed", "Support", "TestSupport"]),
        .testTarget(
            name: "TrainingTests",
            dependencies: [
                "Training", "Checkpoint", "Configuration", "Model", "Distributed", "Tokenizer", "Support",
                "TestSupport",
            ]),
        .testTarget(
            name: "FineTuneTests",
            dependencies: [
                "FineTune", "Inference", "Training", "Distributed", "Configuration", "Model", "Tokenizer", "Support",
            ],
            exclude: ["Fixtures"]),
        .testTarget(
            name: "InferenceTests", dependencies: ["Inference", "Model", "Kernels", "Tokenizer", "Support"],
            exclude: ["Fixtures"]),
        .testTarget(
            name: "ToolsTests", dependencies: ["Tools", "Configuration", "Model", "Optim", "Distributed", "Support"]),
        // llama-train with the faults the tests inject (a NaN loss, a rank dying mid-checkpoint) set from its
        // own first arguments: the test-only seam, so production code reads no test variables.
        .executableTarget(name: "FaultInjection", dependencies: ["Commands", "Support"], path: "Tests/FaultInjection"),
        // Runs the built llama-train (and mpirun); depends on the executables so `swift test` builds them first.
        .testTarget(
            name: "LauncherTests", dependencies: ["Launcher", "FaultInjection", "TestSupport"], exclude: ["Fixtures"]),
    ]
)
