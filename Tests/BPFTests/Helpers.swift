import BPF
import BPFAssembly

#if canImport(Glibc)
    import Glibc
#endif

/// SK_LOOKUP programs written directly in the DSL, for testing the kernel layer on its own.
enum TestPrograms {
    static let pass = Assembly([.mov(.r0, 1), .exit()])
    static let drop = Assembly([.mov(.r0, 0), .exit()])

    /// Assigns the socket at `index` of `sockets` (a SOCKMAP) and passes; drops if the
    /// slot is empty or the assignment fails.
    static func assign(from sockets: Map, index: Int32) throws -> Assembly {
        let drop = Label("drop")
        let release = Label("release")
        return try assemble {
            Instruction.mov(.r6, .r1)
            Instruction.st(.w, .r10, -4, index)
            Statement.loadMap(.r1, sockets)
            Instruction.mov(.r2, .r10)
            Instruction.add(.r2, -4)
            Instruction.call(.mapLookupElem)
            Statement.jump(.jeq, .r0, 0, to: drop)
            Instruction.mov(.r7, .r0)
            Instruction.mov(.r1, .r6)
            Instruction.mov(.r2, .r7)
            Instruction.mov(.r3, 0)
            Instruction.call(.skAssign)
            Instruction.mov(.r8, .r0)
            release
            Instruction.mov(.r1, .r7)
            Instruction.call(.skRelease)
            Statement.jump(.jne, .r8, 0, to: drop)
            Instruction.mov(.r0, 1)
            Instruction.exit()
            drop
            Instruction.mov(.r0, 0)
            Instruction.exit()
        }
    }
}
