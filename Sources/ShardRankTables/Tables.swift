public enum Tables {}
