// `llama-train CMD --help` as built from the declarations: each declared flag's line ends with what it
// accepts and its default, taken from the one declaration (or Flag) that also supplies the value.
import Foundation
import Testing

@Suite struct HelpTests {
    /// The help line of `--name` in `command`'s help.
    func helpLine(_ command: [String], _ name: String) throws -> String {
        let r = try run([try toolPath()] + command + ["--help"])
        #expect(r.status == 0, "\(r.stderr)")
        // A long usage wraps its help onto the next line; join them.
        let lines = r.stdout.components(separatedBy: "\n")
        let i = try #require(
            lines.firstIndex { $0.hasPrefix("  --\(name) ") || $0 == "  --\(name)" },
            "no --\(name) in \(command)")
        return lines[i] + (i + 1 < lines.count && lines[i + 1].hasPrefix("        ") ? lines[i + 1] : "")
    }

    @Test func flagHelpShowsTheDeclaredDefault() throws {
        let expected: [([String], String, String)] = [
            (["pretrain"], "keep", "(an integer in 2...1000000; default 2)"),
            (["pretrain"], "threads", "(an integer in 1...4096; default 1)"),
            (["pretrain"], "collective-timeout", "default 300)"),
            (["pretrain"], "log-every", "(an integer ≥ 1; default 1)"),
            (["pretrain"], "checkpoint-every", "(an integer ≥ 0; default 0)"),
            (["pretrain"], "resume", "(default auto)"),
            (["pretrain"], "lr", "(a number > 0 and ≤ 10; default 0.0003)"),
            (["pretrain"], "grad-reduce", "(fp32 or bf16; default fp32)"),
            (["pretrain"], "precision", "default: bf16 where the CPU has AVX-512 BF16 or AMX, else fp32)"),
            (["sft"], "template", "(separator or llama2-chat; default separator)"),
            (["reward"], "separator", "(default <sep>)"),
            (["bench"], "threads", "(an integer in 1...4096; default 1)"),
            (["format"], "template", "default separator)"),
            // Flags of other commands declare their defaults on the Flag itself, read back by Arguments.
            (["bench"], "steps", "(an integer in 1...1000000; default 5)"),
            (["bench"], "tiles", "(default 32x32 64x64 128x128 64x128 128x64)"),
            (["tokenizer", "train"], "vocab-size", "default 32000)"),
            (["generate"], "temperature", "(a number ≥ 0 and ≤ 100; default 0.8)"),
            (["prepare"], "text-field", "(default text)"),
        ]
        for (command, name, note) in expected {
            let line = try helpLine(command, name)
            #expect(line.hasSuffix(note), "\(command) --\(name): \(line)")
        }
    }
}
