require "fileinto";
fileinto "Same";
fileinto "Same";
keep;
keep;
