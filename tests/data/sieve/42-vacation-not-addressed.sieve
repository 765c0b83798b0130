require "vacation";
vacation :addresses ["nobody@example.org"] "Away";
