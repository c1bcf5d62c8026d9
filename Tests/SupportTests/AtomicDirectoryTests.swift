// A directory of several files (a model) that appears whole: staged beside its target, then renamed into
// place; an earlier model's files go with it, a user's own files stay.
import Foundation
import Support
import Testing

@Suite struct AtomicDirectoryTests {
    func stage(_ target: String, _ files: [String: String]) throws -> String {
        let staging = AtomicDirectory.staging(for: target, tag: UUID().uuidString)
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: staging + "/" + name, atomically: false, encoding: .utf8) }
        return staging
    }

    func contents(_ dir: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            out[name] = try String(contentsOfFile: dir + "/" + name, encoding: .utf8)
        }
        return out
    }

    @Test func replacesAnEarlierModelWholeAndKeepsForeignFiles() throws {
        let root = NSTemporaryDirectory() + "atomic-dir-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let target = root + "/model"
        let ours: (String) -> Bool = { $0.hasPrefix("w") || $0 == "index" }
        let isIndex: (String) -> Bool = { $0 == "index" }
        #expect(AtomicDirectory.staging(for: target, tag: "7") == root + "/.model.partial-7")

        // A new target: the staged directory becomes it.
        var staging = try stage(target, ["w1": "a", "w2": "b", "index": "1"])
        try AtomicDirectory.commit(staging: staging, to: target, replaceable: ours, last: isIndex)
        #expect(try contents(target) == ["w1": "a", "w2": "b", "index": "1"])
        #expect(!FileManager.default.fileExists(atPath: staging))

        // Only an earlier model there: replaced whole, its files not staged anew gone.
        staging = try stage(target, ["w": "c"])
        try AtomicDirectory.commit(staging: staging, to: target, replaceable: ours, last: isIndex)
        #expect(try contents(target) == ["w": "c"])

        // A user's file beside it: kept, the model's files replaced.
        try "mine".write(toFile: target + "/notes.txt", atomically: false, encoding: .utf8)
        staging = try stage(target, ["w1": "d", "index": "2"])
        try AtomicDirectory.commit(staging: staging, to: target, replaceable: ours, last: isIndex)
        #expect(try contents(target) == ["w1": "d", "index": "2", "notes.txt": "mine"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["model"], "nothing staged is left")
    }
}
