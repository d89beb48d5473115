import BPF
import BPFAssembly
import Foundation
import KernelTestSupport
import Testing

/// The listings agree with bpftool on the same machine.
@Suite(needsRoot)
struct ListingTests {
    static func bpftool(_ arguments: [String]) throws -> [[String: Any]]? {
        let candidates = ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/usr/local/sbin/bpftool"]
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return nil
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments + ["--json"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONSerialization.jsonObject(with: data) as? [[String: Any]]
    }

    @Test func programAndLinkListsAgreeWithBpftool() throws {
        try exclusively {
            let namespace = try NetworkNamespace.makeThrowaway()
            let program = try Program.load(TestPrograms.pass, type: .skLookup, name: "listed")
            let link = try Link.attach(program, to: namespace)
            let ours = try ProgramInfo.all(type: .skLookup)
            let linkInfo = try link.info()
            guard let theirs = try Self.bpftool(["prog", "show"]), let theirLinks = try Self.bpftool(["link", "show"])
            else {
                Issue.record("bpftool is not installed (.ci/run installs it)")
                return
            }
            let theirSKLookup = theirs.filter { $0["type"] as? String == "sk_lookup" }
            #expect(Set(ours.map(\.id)) == Set(theirSKLookup.compactMap { ($0["id"] as? NSNumber)?.uint32Value }))
            let mine = try #require(ours.first { $0.id == (try? program.info().id) })
            let entry = try #require(theirSKLookup.first { ($0["id"] as? NSNumber)?.uint32Value == mine.id })
            #expect(entry["name"] as? String == mine.name)
            #expect(entry["tag"] as? String == mine.tag)
            let theirLink = try #require(theirLinks.first { ($0["id"] as? NSNumber)?.uint32Value == linkInfo.id })
            #expect(theirLink["type"] as? String == "netns")
            #expect((theirLink["prog_id"] as? NSNumber)?.uint32Value == linkInfo.programID)
            #expect((theirLink["netns_ino"] as? NSNumber)?.uint64Value == linkInfo.namespaceInode)
            #expect(try LinkInfo.all().contains(linkInfo))
        }
    }
}
