require "fileinto";
if header :matches "Subject" "*THERE" { fileinto "Matched"; }
