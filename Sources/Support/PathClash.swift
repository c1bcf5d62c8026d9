// Outputs that would destroy inputs: before any work, every path a command writes is compared with every path
// it reads in another role, through symlinks and `..` (resolved paths), so `--out runs/x` beside
// `--config runs/x/config.json`, `--metrics` naming the SFT data, or `tokenizer train --out` naming its own
// input are refused naming both flags, instead of ending with exit 0 and a lost file. What this is not: the
// paths a command reads and writes by design (a checkpoint directory, a metrics file appended to on resume),
// which callers leave out of the lists.
import Foundation

public enum PathClash {
    /// A path a command writes: one file, or the named files inside a directory.
    public struct Output {
        public let flag: String
        public let path: String
        /// The files written inside `path` when it is a directory; nil when `path` is the file itself.
        public let files: [String]?
        /// For a directory whose file names depend on the run (token shards): whether a name inside it is one
        /// the command may write.
        public let writesName: ((String) -> Bool)?

        public static func file(_ flag: String, _ path: String) -> Output {
            Output(flag: flag, path: path, files: nil, writesName: nil)
        }
        public static func directory(_ flag: String, _ path: String, writing files: [String]) -> Output {
            Output(flag: flag, path: path, files: files, writesName: nil)
        }
        public static func directory(
            _ flag: String, _ path: String, writingNames: @escaping (String) -> Bool
        )
            -> Output
        {
            Output(flag: flag, path: path, files: [], writesName: writingNames)
        }
    }

    /// Throws a FileError naming the output's flag and the input's when an output would replace or truncate an
    /// input: the same file, or (for a directory input, such as prepared data or a starting model) a file
    /// inside it.
    public static func check(outputs: [Output], inputs: [(flag: String, path: String)]) throws {
        let readFrom = inputs.map { (flag: $0.flag, path: resolved($0.path)) }
        for output in outputs {
            let written =
                output.files.map { names in names.map { resolved(output.path + "/" + $0) } } ?? [resolved(output.path)]
            let directory = resolved(output.path)
            for input in readFrom {
                let named = written.contains { $0 == input.path || $0.hasPrefix(input.path + "/") }
                // Names known only as a pattern: an input directly inside the directory that the pattern claims.
                let patterned =
                    output.writesName.map { writes in
                        (input.path as NSString).deletingLastPathComponent == directory
                            && writes((input.path as NSString).lastPathComponent)
                    } ?? false
                guard named || patterned else { continue }
                throw FileError(
                    path: input.path,
                    message:
                        "\(output.flag) (\(output.path)) would overwrite what \(input.flag) reads; write the output somewhere else"
                )
            }
        }
    }

    /// The path with symlinks and `..` resolved as far as it exists, the rest appended: the same file however
    /// it is spelled, whether it exists yet or not.
    public static func resolved(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var existing = absolute, rest: [String] = []
        while !existing.isEmpty && existing != "/" {
            if let real = realpath(existing, nil) {
                defer { free(real) }
                let base = String(cString: real)
                guard !rest.isEmpty else { return base }
                // The part that does not exist yet is resolved as text (a directory made with its parents).
                return ((base as NSString).appendingPathComponent(rest.reversed().joined(separator: "/")) as NSString)
                    .standardizingPath
            }
            rest.append((existing as NSString).lastPathComponent)
            existing = (existing as NSString).deletingLastPathComponent
        }
        return (("/" as NSString).appendingPathComponent(rest.reversed().joined(separator: "/")) as NSString)
            .standardizingPath
    }
}
