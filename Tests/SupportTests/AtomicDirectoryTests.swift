// A directory of several files (a model) that a reader finds whole: staged inside the target, renamed in with
// the index last; an earlier model's files that nothing replaces go, everything else stays; a killed writer's
// staging is removed, a live one's is not.
import Foundation
import Support
import Testing

@Suite struct AtomicDirectoryTests {
    func stage(_ target: String, _ files: [String: String]) throws -> String {
        let staging = AtomicDirectory.staging(in: target, tag: UUID().uuidString)
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

    @Test func replacesAnEarlierModelAndKeepsEverythingElse() throws {
        let target = NSTemporaryDirectory() + "atomic-dir-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: target) }
        let weights: (String) -> Bool = { $0.hasPrefix("w") || $0 == "index" }
        let isIndex: (String) -> Bool = { $0 == "index" }
        #expect(AtomicDirectory.staging(in: target, tag: "7@h") == target + "/.partial-7@h")

        var staging = try stage(target, ["w1": "a", "w2": "b", "index": "1", "tokenizer": "t"])
        try AtomicDirectory.commit(staging: staging, to: target, replaceable: weights, last: isIndex)
        #expect(try contents(target) == ["w1": "a", "w2": "b", "index": "1", "tokenizer": "t"])
        #expect(!FileManager.default.fileExists(atPath: staging))

        // A smaller model: the earlier weight files it does not replace go; a file it does not write (the
        // tokenizer here) and a user's own stay.
        try "mine".write(toFile: target + "/notes.txt", atomically: false, encoding: .utf8)
        staging = try stage(target, ["w": "c"])
        try AtomicDirectory.commit(staging: staging, to: target, replaceable: weights, last: isIndex)
        #expect(try contents(target) == ["w": "c", "tokenizer": "t", "notes.txt": "mine"])

        // A killed writer's staging (a pid that does not run) is removed; one of a live process stays.
        let host = AtomicDirectory.tag().split(separator: "@", maxSplits: 1)[1]
        let dead = AtomicDirectory.staging(in: target, tag: "999999999@\(host)")
        let live = AtomicDirectory.staging(in: target, tag: AtomicDirectory.tag())
        for dir in [dead, live] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        AtomicDirectory.removeStale(in: target)
        #expect(!FileManager.default.fileExists(atPath: dead) && FileManager.default.fileExists(atPath: live))
    }
}
