/// The deterministic synthetic world (issue 7).
public enum Synth {}
