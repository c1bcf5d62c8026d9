// The README's key tables against the declarations: generated from them (SettingsBlock.markdownTable), so
// a key, default or range is written once; this fails when the README and the declarations part.
//
//   UPDATE_README_TABLES=1 swift test --filter ReadmeTableTests     # rewrites the tables from the declarations
import Configuration
import Foundation
import Model
import Support
import Testing

@Suite(.serialized) struct ReadmeTableTests {
    /// The README's `model`, `train`, `finetune`, `rejection_sampling` and `ppo` tables are the declarations' own text: every declared key appears,
    /// and no undeclared one.
    @Test(arguments: ["model", "train", "finetune", "rejection_sampling", "ppo"])
    func readmeTablesListExactlyTheDeclaredKeys(
        section: String
    ) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let url = root.appendingPathComponent("README.md")
        var readme = try String(contentsOf: url, encoding: .utf8)
        let (table, names) =
            switch section {
            case "model": (ModelBlock.settings.markdownTable(), ModelBlock.settings.names)
            case "train": (TrainSettings.settings.markdownTable(), TrainSettings.settings.names)
            case "finetune": (FineTuneSettings.settings.markdownTable(), FineTuneSettings.settings.names)
            case "ppo": (PPOSettings.settings.markdownTable(), PPOSettings.settings.names)
            default: (RejectionSamplingSettings.settings.markdownTable(), RejectionSamplingSettings.settings.names)
            }
        var lines = readme.components(separatedBy: "\n")
        if ProcessInfo.processInfo.environment["UPDATE_README_TABLES"] == "1",
            let start = lines.firstIndex(where: { $0.hasPrefix("| `\(section)` key |") })
        {
            let end = lines[start...].firstIndex { !$0.hasPrefix("|") } ?? lines.endIndex
            lines.replaceSubrange(start..<end, with: table.components(separatedBy: "\n"))
            readme = lines.joined(separator: "\n")
            try readme.write(to: url, atomically: true, encoding: .utf8)
        }
        // The keys the README's table lists: the first cell of each row under this section's header.
        let header = try #require(
            lines.firstIndex { $0.hasPrefix("| `\(section)` key |") },
            "README has no `\(section)` key table")
        let listed = lines[(header + 2)...].prefix { $0.hasPrefix("|") }.compactMap { row in
            row.split(separator: "|").first.map { $0.trimmingCharacters(in: .whitespaces.union(["`"])) }
        }
        let missing = Set(names).subtracting(listed).sorted(), extra = Set(listed).subtracting(names).sorted()
        #expect(missing.isEmpty, "declared but not in the README: \(missing)")
        #expect(extra.isEmpty, "in the README but not declared: \(extra)")
        let generated = readme.contains(table)  // not the README itself into the failure message
        #expect(generated, "README.md's `\(section)` table differs from the declarations; it should read:\n\(table)")
    }
}
