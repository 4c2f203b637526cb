internal import CShardRankKernels

/// An instruction-set variant of the compiled kernels. All variants are built into every
/// binary; the best one the CPU supports is chosen at run time (`KernelISA.best`).
/// Tests and benchmarks pass a variant explicitly to compare them.
public enum KernelISA: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// Portable vectors of 4 floats (SSE2 on x86-64), no FMA.
    case baseline = 0
    /// AVX2 + FMA + F16C, 8 floats per vector.
    case avx2 = 1
    /// AVX-512 F/BW/VL/DQ, 16 floats per vector.
    case avx512 = 2

    /// The variants this CPU (and OS) can run, baseline first.
    public static var supported: [KernelISA] {
        let mask = srk_isa_supported()
        return allCases.filter { mask & (1 << $0.rawValue) != 0 }
    }

    /// The fastest supported variant, detected once per process.
    public static var best: KernelISA { KernelISA(rawValue: srk_isa_best()) ?? .baseline }

    public var isSupported: Bool { srk_isa_supported() & (1 << rawValue) != 0 }

    public var description: String {
        switch self {
        case .baseline: "baseline"
        case .avx2: "avx2"
        case .avx512: "avx512"
        }
    }

    /// The kernel table; traps if the CPU cannot run this variant (a programmer error:
    /// check `isSupported` or use `best`).
    var table: UnsafePointer<srk_kernels> {
        guard let t = srk_kernels_for(rawValue) else {
            preconditionFailure("KernelISA.\(self) is not supported by this CPU")
        }
        return t
    }
}
